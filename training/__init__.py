"""Training a reasoning re-ranker: teacher annotation, distillation and refinement (``reasonrank-train``)."""
