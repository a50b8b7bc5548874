"""A config per trainer: refinement's algorithm picks RwsftConfig or GrpoRefineConfig, neither carries
the other's options, and the student loads by the library's loading policy."""
import dataclasses
import shutil
from importlib import resources

import pytest
import torch
from transformers import TrainingArguments
from trl import GRPOConfig

from pyterrier_reasonrank import InputError, ModelNotFoundError, PickleCheckpointError
from pyterrier_reasonrank.training.cli import main
from pyterrier_reasonrank.training.grpo import GrpoRefineConfig
from pyterrier_reasonrank.training.recipes import RecipeError, parse_command, read_recipe, recipe_section
from pyterrier_reasonrank.training.refine_config import RefineConfig
from pyterrier_reasonrank.training.rwsft import RwsftConfig
from pyterrier_reasonrank.training.student import StudentConfig, load_student

RECIPES = resources.files("pyterrier_reasonrank.training") / "configs"
SHARED_WITH_GRPO = {"num_generations", "temperature", "max_completion_length", "reward_weights", "trust_remote_code"}
RWSFT_ONLY = {"keep_threshold", "weight_power", "include_teacher", "keep_ties", "sampling_backend",
              "sampling_engine_options"}


def names(config_type: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_type)}


def shipped_refine(recipe: str, argv=()) -> tuple:
    """The refine section of a shipped recipe, parsed (a GPU recipe with bf16 off, as on this CPU)."""
    section = recipe_section(str(RECIPES / recipe), "refine")
    return parse_command("refine", dict(section, bf16=False), list(argv))


@pytest.mark.parametrize("recipe, argv, config_type", [
    ("tiny-cpu.yaml", [], RwsftConfig),
    ("tiny-cpu.yaml", ["--algorithm", "grpo"], GrpoRefineConfig),
    ("tiny-cpu.yaml", ["--algorithm=grpo"], GrpoRefineConfig),
    ("paper-3b.yaml", [], RwsftConfig),
    ("recommended.yaml", [], GrpoRefineConfig),
])
def test_each_algorithm_reads_its_recipe_into_its_own_config(recipe, argv, config_type):
    config, student = shipped_refine(recipe, argv)
    assert type(config) is config_type and isinstance(student, StudentConfig)
    assert config.algorithm == {RwsftConfig: "rwsft", GrpoRefineConfig: "grpo"}[config_type]
    section = recipe_section(str(RECIPES / recipe), "refine")
    for key in ("train_file", "output_dir", "rewards", "num_generations", "temperature", "max_completion_length",
                "learning_rate", "beta", "keep_threshold", "reward_model"):
        if key in section:  # the same keys as before, read into the config
            assert getattr(config, key) == section[key], key


def test_the_tiny_recipe_with_grpo_takes_its_sampling_and_grpos_defaults():
    config, _ = read_recipe("refine", str(RECIPES / "tiny-cpu.yaml"), ["--algorithm", "grpo", "--beta", "0.1"])
    assert (config.num_generations, config.temperature, config.max_completion_length) == (4, 1.0, 32)
    assert config.beta == 0.1 and config.generation_batch_size == 8  # GRPOConfig's own setting-up ran
    assert not hasattr(config, "keep_threshold") and not hasattr(config, "sampling_backend")


def test_the_rwsft_config_has_no_option_of_grpo_but_the_shared_ones():
    grpo_only = names(GRPOConfig) - names(TrainingArguments)
    assert names(RwsftConfig) & grpo_only == SHARED_WITH_GRPO
    assert names(RwsftConfig) - names(GrpoRefineConfig) == RWSFT_ONLY
    assert names(GrpoRefineConfig) >= names(GRPOConfig) | (names(RefineConfig) | {"algorithm"})
    assert not issubclass(RwsftConfig, GRPOConfig) and issubclass(RwsftConfig, TrainingArguments)
    # the shared sampling options mean the same for both: GRPOConfig's defaults; and rwsft trains by
    # default as it did when GRPOConfig configured it (its collator needs the examples' unused columns)
    same = SHARED_WITH_GRPO | {"learning_rate", "gradient_checkpointing", "logging_steps", "remove_unused_columns"}
    grpo_defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    assert {f.name: f.default for f in dataclasses.fields(RwsftConfig) if f.name in same} == \
        {name: grpo_defaults[name] for name in same}


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    return error


def test_a_grpo_key_with_rwsft_is_refused_in_one_line(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("refine:\n  algorithm: rwsft\n  model_name_or_path: m\n  beta: 0.04\n")
    assert one_line_error(capsys, ["refine", "--config", str(recipe)]).startswith(
        f"reasonrank-train refine: unknown key(s) in the 'refine:' section of {recipe}: beta (an option of "
        "algorithm grpo, not rwsft). Valid keys: ")
    # on the command line too, and with the algorithm by default
    assert one_line_error(capsys, ["refine", "--model_name_or_path", "m", "--use_vllm", "true"]).startswith(
        "reasonrank-train refine: unknown command-line option(s): --use_vllm (an option of algorithm grpo, not "
        "rwsft). Valid keys: ")
    # the option picks the algorithm over the recipe's key: recommended.yaml's GRPO keys do not fit rwsft
    assert one_line_error(capsys, ["refine", "--config", str(RECIPES / "recommended.yaml"), "--algorithm",
                                   "rwsft"]).startswith(
        "reasonrank-train refine: unknown key(s) in the 'refine:' section of "
        f"{RECIPES / 'recommended.yaml'}: beta (an option of algorithm grpo, not rwsft). Valid keys: ")


def test_an_rwsft_key_with_grpo_and_an_unknown_algorithm_are_refused():
    with pytest.raises(RecipeError, match=r"^unknown key\(s\) in the recipe: keep_ties \(an option of algorithm "
                                          r"rwsft, not grpo\)\. Valid keys: "):
        parse_command("refine", {"algorithm": "grpo", "keep_ties": False}, [])
    with pytest.raises(RecipeError, match=r"^the recipe: algorithm: 'ppo' is not one of rwsft, grpo$"):
        parse_command("refine", {"algorithm": "ppo"}, [])
    with pytest.raises(RecipeError, match=r"^the command line: --algorithm: 'ppo' is not one of rwsft, grpo$"):
        parse_command("refine", {"algorithm": "grpo"}, ["--algorithm", "ppo"])


def test_a_config_is_of_its_own_algorithm(tmp_path):
    with pytest.raises(InputError, match=r"^RwsftConfig configures algorithm rwsft, not 'grpo'; each algorithm has "
                                         r"a config of its own \(rwsft: RwsftConfig, grpo: GrpoRefineConfig\)$"):
        RwsftConfig(output_dir=str(tmp_path), algorithm="grpo")
    with pytest.raises(TypeError, match=r"^RefineConfig holds what the refinement configs share"):
        RefineConfig()
    with pytest.raises(InputError, match=r"num_generations must be at least 2 with algorithm grpo"):
        GrpoRefineConfig(output_dir=str(tmp_path), num_generations=1)
    assert RwsftConfig(output_dir=str(tmp_path), num_generations=1).num_generations == 1
    with pytest.raises(InputError, match=r"^remove_unused_columns must be false with algorithm rwsft"):
        RwsftConfig(output_dir=str(tmp_path), remove_unused_columns=True)
    # the checks of the shared settings hold for both
    for config_type in (RwsftConfig, GrpoRefineConfig):
        with pytest.raises(InputError, match=r"mix a reward model's scores"):
            config_type(output_dir=str(tmp_path), rewards=["label", "reward_model"], reward_model="rm")
        with pytest.raises(InputError, match=r"label_source must be one of"):
            config_type(output_dir=str(tmp_path), label_source="oracle")


def test_the_student_loads_by_the_librarys_loading_policy(tiny_model, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"^Could not load the model: there is no directory '/no/such/model'"):
        load_student(StudentConfig(model_name_or_path="/no/such/model"))
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model, pickled)
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")  # refused by its name, before any loader reads it
    with pytest.raises(PickleCheckpointError, match=r"pickle files \(pytorch_model.bin\)"):
        load_student(StudentConfig(model_name_or_path=str(pickled)))
    with pytest.raises(ModelNotFoundError, match=r"^Could not load the adapter: the directory .* holds no loadable "
                                                 r"adapter \(no adapter_config.json"):
        load_student(StudentConfig(model_name_or_path=str(tiny_model), adapter=str(tmp_path)))
    model, tokenizer = load_student(StudentConfig(model_name_or_path=str(tiny_model), dtype="bfloat16"))
    assert model.dtype == torch.bfloat16 and tokenizer.pad_token is not None
