"""The training pipeline learns: teacher annotation over HTTP, distillation, both refinements, and
the result re-ranking through ReasonRanker — on a synthetic task whose label needs both the query
and the document (see synthetic.py), with the tiny model, offline."""
import json

import pandas as pd
import pyterrier as pt
import pytest

from openai_server import OpenAICompatibleServer
from pyterrier_reasonrank import QueryGenerator, ReasonRanker
from pyterrier_reasonrank.training.annotation import AnnotateConfig, annotate
from pyterrier_reasonrank.training.distillation import DistillConfig, distill
from pyterrier_reasonrank.training.records import read_jsonl
from pyterrier_reasonrank.training.grpo import GrpoRefineConfig
from pyterrier_reasonrank.training.refinement import refine
from pyterrier_reasonrank.training.rwsft import RwsftConfig
from pyterrier_reasonrank.training.student import StudentConfig
from synthetic import make_pairs, ranking_task, teacher_answer

# LoRA on every linear layer, with embeddings and output layer trained too: a random model has no
# useful embeddings to adapt around.
LORA = dict(lora_r=16, lora_alpha=32, lora_dropout=0.0, lora_target_modules=["all-linear"],
            lora_modules_to_save=["embed_tokens", "lm_head"])


@pytest.fixture(scope="module")
def work(tmp_path_factory, vocabulary):
    """600 training pairs annotated by a rule-following teacher behind an OpenAI-compatible
    server (with search queries for their questions), and 90 held-out pairs with gold labels."""
    work = tmp_path_factory.mktemp("learning")
    with OpenAICompatibleServer(lambda messages: teacher_answer(vocabulary, messages)) as server:
        summary = annotate(AnnotateConfig(output=str(work / "train.jsonl"), queries_output=str(work / "queries.jsonl"),
                                          teacher="openai", teacher_model="rule", base_url=server.base_url,
                                          api_key="test-key", concurrency=8),
                           pairs=make_pairs(vocabulary, 600, seed=0))
    assert summary["usable"] == 600 and summary["queries"]["usable"] == 600
    # refinement samples from the student on a third of them (the file is in order of arrival)
    records = sorted(read_jsonl(work / "train.jsonl"), key=lambda record: record["qid"])[:200]
    (work / "refine.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    with open(work / "held_out.jsonl", "w") as file:
        for pair in make_pairs(vocabulary, 90, seed=1, prefix="h").to_dict("records"):
            file.write(json.dumps(pair) + "\n")
    return work


@pytest.fixture(scope="module")
def distilled(work, tiny_model):
    metrics = distill(DistillConfig(output_dir=str(work / "distill"), train_file=str(work / "train.jsonl"),
                                    query_generation_file=str(work / "queries.jsonl"), direct_fraction=0.5,
                                    query_fraction=0.1, eval_file=str(work / "held_out.jsonl"), num_train_epochs=5,
                                    per_device_train_batch_size=16, learning_rate=2e-3, lr_scheduler_type="constant",
                                    save_strategy="epoch", logging_steps=20, disable_tqdm=True),
                      StudentConfig(model_name_or_path=str(tiny_model), **LORA))
    return work / "distill", metrics


def test_distillation_learns_the_rule(distilled):
    _, metrics = distilled
    explain, direct = metrics["eval"]["explain"], metrics["eval"]["direct"]
    assert explain["pairs"] == direct["pairs"] == 90 and explain["majority_rate"] < 0.45
    assert explain["accuracy"] >= explain["majority_rate"] + 0.25
    # the same adapter judges in direct mode too, better than always answering the commonest label
    assert direct["accuracy"] > direct["majority_rate"]
    assert metrics["examples"] == {"explain": 600, "direct": 300, "queries": 60}
    assert (distilled[0] / "curves.png").stat().st_size > 1000


def test_the_distilled_adapter_writes_queries(distilled, vocabulary):
    topics = pd.DataFrame({"qid": ["a", "b", "c"], "query": [f"about {topic}" for topic in vocabulary.topics]})
    rewritten = QueryGenerator(adapter=str(distilled[0]), max_new_tokens=16)(topics)
    assert [queries for queries in rewritten["generated_queries"]] == \
        [vocabulary.queries(question) for question in topics["query"]]


@pytest.mark.parametrize("algorithm, config_type, options", [
    ("rwsft", RwsftConfig, dict(learning_rate=5e-4, num_generations=4, per_device_train_batch_size=8)),
    # GRPO: 25 steps of 4 pairs x 8 samples (half the refinement pairs; the gain was 0.35 after 50 steps)
    ("grpo", GrpoRefineConfig, dict(learning_rate=3e-4, num_generations=8, per_device_train_batch_size=32, max_steps=25)),
])
def test_refinement_raises_the_held_out_reward(work, distilled, algorithm, config_type, options):
    # From the student after 1 of its 5 epochs (a checkpoint of the distillation): partly trained,
    # so that there is reward left to gain.
    checkpoints = sorted(distilled[0].glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    assert len(checkpoints) == 5
    metrics = refine(config_type(output_dir=str(work / algorithm),
                                 train_file=str(work / "refine.jsonl"), eval_file=str(work / "held_out.jsonl"),
                                 temperature=1.0, max_completion_length=24, lr_scheduler_type="constant",
                                 num_train_epochs=1, save_strategy="no", logging_steps=10, eval_samples=8,
                                 disable_tqdm=True, **options),
                     StudentConfig(adapter=str(checkpoints[0])))
    # label reward + format reward (each 0..1), averaged over 8 samples per held-out pair
    assert metrics["eval_reward_after"] >= metrics["eval_reward_before"] + 0.05
    card = json.loads((work / algorithm / "run_card.json").read_text())
    assert card["stage"] == f"refine-{algorithm}" and card["metrics"]["eval_reward_after"] == metrics["eval_reward_after"]


@pytest.mark.parametrize("mode", ["explain", "direct"])
def test_the_distilled_adapter_beats_the_untrained_model(distilled, tiny_model, vocabulary, mode):
    candidates, qrels = ranking_task(vocabulary, seed=2)
    ndcg = {}
    for name, ranker in [("untrained", ReasonRanker(str(tiny_model), mode=mode, max_new_tokens=24)),
                         ("distilled", ReasonRanker(adapter=str(distilled[0]), mode=mode, max_new_tokens=24))]:
        ndcg[name] = pt.Evaluate(ranker(candidates), qrels, [pt.measures.nDCG @ 10])["nDCG@10"]
    assert ndcg["distilled"] >= ndcg["untrained"] + 0.1, ndcg
