"""The parts of training: examples and their loss masks, rewards, reward-weighted loss, student loading, recipes."""
import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTTrainer

from pyterrier_reasonrank import InputError
from pyterrier_reasonrank.backends.hf import HFBackend
from pyterrier_reasonrank.prompts import PromptEncoder
from pyterrier_reasonrank.settings import StudentSettings
from pyterrier_reasonrank.testing import build_tiny_reward_model
from pyterrier_reasonrank.training.distillation import DistillConfig, training_examples
from pyterrier_reasonrank.training.recipes import RecipeError, parse_configs, recipe_section
from pyterrier_reasonrank.training.rewards import RewardModelReward, format_reward, label_reward, reward_functions
from pyterrier_reasonrank.training.rwsft import RwsftConfig, RwsftTrainer, min_max, weighted_examples
from pyterrier_reasonrank.training.student import StudentConfig, load_student

JUDGEMENT = {"query": "what causes tides", "text": "The moon pulls the ocean.", "explanation": "It names the cause.",
             "label": 2}


def test_examples_mask_everything_but_the_response(tiny_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = DistillConfig(output_dir=str(tmp_path), direct_fraction=0.0)
    [example], stats = training_examples(tokenizer, StudentSettings(max_doc_tokens=64), config, [JUDGEMENT])
    assert stats == {"examples": {"explain": 1}, "documents_cut": 0, "questions_cut": 0, "too_long": 0}
    encoder = PromptEncoder(tokenizer, max_doc_tokens=64)
    prompt = encoder.encode(JUDGEMENT["query"], JUDGEMENT["text"])
    assert example["input_ids"][:len(prompt)] == prompt
    assert example["completion_mask"] == [0] * len(prompt) + [1] * (len(example["input_ids"]) - len(prompt))
    response = tokenizer.decode([t for t, m in zip(example["input_ids"], example["completion_mask"]) if m])
    assert response == " It names the cause.\nRelevance: 2<|im_end|>"
    # trl turns the mask into labels: -100 on the prompt, the response tokens where they are
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=config,
                         train_dataset=Dataset.from_list([example]), processing_class=tokenizer)
    labels = trainer.train_dataset[0]["labels"]
    assert labels[:len(prompt)] == [-100] * len(prompt) and labels[len(prompt):] == example["input_ids"][len(prompt):]


def test_one_run_trains_every_task_in_the_mix_asked(tiny_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    judgements = [dict(JUDGEMENT, query=f"question {i}") for i in range(10)]
    query_lists = [{"query": f"a long question {i}", "queries": ["tides", "moon"]} for i in range(4)]
    config = DistillConfig(output_dir=str(tmp_path), direct_fraction=0.3, query_fraction=0.5)
    examples, stats = training_examples(tokenizer, StudentSettings(), config, judgements, query_lists)
    assert stats["examples"] == {"explain": 10, "direct": 3, "queries": 2} and len(examples) == 15
    responses = [tokenizer.decode([t for t, m in zip(e["input_ids"], e["completion_mask"]) if m]) for e in examples]
    assert responses.count(" It names the cause.\nRelevance: 2<|im_end|>") == 10
    assert responses.count(" 2<|im_end|>") == 3  # direct mode: the label after the prompt's "Relevance:"
    assert responses.count("\n1. tides\n2. moon<|im_end|>") == 2
    # the same draw under the same seed
    assert training_examples(tokenizer, StudentSettings(), config, judgements, query_lists)[0] == examples


def test_a_long_example_has_its_document_cut_to_fit(tiny_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    long = dict(JUDGEMENT, text="the moon pulls the ocean and the tides follow " * 200)
    settings = StudentSettings(max_doc_tokens=3000)
    [full], _ = training_examples(tokenizer, settings, DistillConfig(output_dir=str(tmp_path), direct_fraction=0),
                                  [long])
    config = DistillConfig(output_dir=str(tmp_path), direct_fraction=0, max_length=300)
    [fitted], stats = training_examples(tokenizer, settings, config, [long])
    assert len(full["input_ids"]) > 1000 and len(fitted["input_ids"]) == 300
    assert stats["documents_cut"] == 1 and stats["too_long"] == 0
    response = [t for t, m in zip(fitted["input_ids"], fitted["completion_mask"]) if m]
    assert tokenizer.decode(response) == " It names the cause.\nRelevance: 2<|im_end|>"  # the target is whole
    # one that cannot fit even without its document is left out, and counted
    examples, stats = training_examples(tokenizer, settings, DistillConfig(output_dir=str(tmp_path), direct_fraction=0,
                                                                           max_length=20), [long])
    assert examples == [] and stats["too_long"] == 1


def test_label_and_format_rewards():
    completions = [" It explains.\nRelevance: 2", " Close.\nRelevance: 1", " Wrong.\nRelevance: 0", "no label",
                   " Twice.\nRelevance: 1\nRelevance: 2", "\nRelevance: 2", " Trailing.\nRelevance: 2 and more",
                   " Lower case.\nrelevance: 2", " Far.\nRelevance:\n\n2", " Big.\nRelevance: 20",
                   " Padded.\nRelevance: 02"]
    # as the ranker reads them: one label token right after the first marker, written exactly so
    assert label_reward(completions, [2] * 11, partial_credit=0.25) == [1.0, 0.25, 0.0, 0.0, 0.25, 1.0, 1.0, 0.0,
                                                                         0.0, 0.0, 0.0]
    assert format_reward(completions + [" Tight.\nRelevance:2"]) == [1.0, 1.0, 1.0] + [0.0] * 9
    assert label_reward(completions[:1], [None]) == [None]
    label, form = reward_functions(["label", "format"], partial_credit=0.1)
    assert label.__name__ == "label_reward" and label([" x\nRelevance: 1"], target_label=[2]) == [0.1]
    with pytest.raises(ValueError, match=r"unknown reward 'length': the built-in ones are \['label', 'format', "):
        reward_functions(["label", "length"])
    with pytest.raises(ValueError, match="needs `reward_model`"):
        reward_functions(["reward_model"])


def test_a_reward_of_your_own_by_its_import_path():
    label, brevity = reward_functions(["label", "custom_rewards.brevity"])
    assert brevity([" Short.\nRelevance: 2", " " + "word " * 30 + "\nRelevance: 2"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"cannot import the reward 'custom_rewards.nothing'"):
        reward_functions(["custom_rewards.nothing"])
    with pytest.raises(ValueError, match=r"cannot import the reward 'no_such_module.reward': No module named"):
        reward_functions(["no_such_module.reward"])


def test_a_reward_model_mixed_with_other_rewards_needs_explicit_weights(tmp_path):
    with pytest.raises(ValueError, match=r"mix a reward model's scores .* give reward_weights"):
        RwsftConfig(output_dir=str(tmp_path), rewards=["label", "reward_model"], reward_model="rm")
    assert RwsftConfig(output_dir=str(tmp_path), rewards=["reward_model"], reward_model="rm").rewards == ["reward_model"]
    assert RwsftConfig(output_dir=str(tmp_path), rewards=["label", "reward_model"], reward_model="rm",
                       reward_weights=[1.0, 0.1]).reward_weights == [1.0, 0.1]


def test_reward_model_reward_scores_each_response(tmp_path):
    scorer = RewardModelReward(str(build_tiny_reward_model(tmp_path / "rm")))
    completions = [" It names the cause.\nRelevance: 2", " Unrelated.\nRelevance: 0", " It names the cause.\nRelevance: 2"]
    rewards = scorer(completions, query=["tides"] * 3, text=["The moon."] * 3)
    assert len(rewards) == 3 and all(np.isfinite(rewards))
    assert rewards[0] == pytest.approx(rewards[2], abs=1e-4) and rewards[0] != pytest.approx(rewards[1], abs=1e-4)


def test_the_reward_model_always_sees_the_response(tmp_path):
    """A document far longer than the reward model's window is cut; the response never is."""
    scorer = RewardModelReward(str(build_tiny_reward_model(tmp_path / "rm")), max_length=128)
    document = "the moon pulls the ocean and the tides follow " * 2000  # ~16K tokens
    good, bad = " It names the cause.\nRelevance: 2", " Unrelated.\nRelevance: 0"
    conversations = [scorer.encoder.encode("tides", document, response) for response in (good, bad)]
    assert [len(c) for c in conversations] == [128, 128]
    assert scorer.tokenizer.decode(conversations[0]).endswith(f"Explanation: {good.strip()}<|im_end|>\n")
    rewards = scorer([good, bad], query=["tides"] * 2, text=[document] * 2)
    assert rewards[0] != pytest.approx(rewards[1], abs=1e-4)


def test_min_max_normalisation_and_ties():
    assert min_max(np.array([1.0, 2.0, 3.0])).tolist() == [0.0, 0.5, 1.0]
    assert min_max(np.array([2.0, 2.0])) is None


def test_reward_weighted_loss_is_the_weighted_response_nll(tiny_model, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    examples = [{"input_ids": [5, 6, 7, 8, 9], "completion_mask": [0, 0, 1, 1, 1], "weight": 0.5},
                {"input_ids": [10, 11, 12], "completion_mask": [0, 1, 1], "weight": 1.0}]
    trainer = RwsftTrainer(model=model, args=RwsftConfig(output_dir=str(tmp_path)),
                           train_dataset=Dataset.from_list(examples), pad_token_id=tokenizer.pad_token_id)
    batch = trainer.data_collator(examples)
    loss = trainer.compute_loss(model, batch)
    expected = []
    for example in examples:
        logits = model(input_ids=torch.tensor([example["input_ids"]])).logits[0]
        start = example["completion_mask"].index(1)
        # the response token at position t is predicted by the logits at t - 1
        nll = [-torch.log_softmax(logits[t - 1], -1)[example["input_ids"][t]] for t in range(start, len(example["input_ids"]))]
        expected.append(example["weight"] * torch.stack(nll).mean())
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


def test_weighted_examples_keep_the_best_candidates(tiny_model):
    # The random model's greedy samples never reach a label (reward 0); the teacher's responses do.
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    encoder = PromptEncoder(tokenizer)
    records = [dict(JUDGEMENT, label=2), dict(JUDGEMENT, label=0)]
    options = dict(keep_threshold=0.85, weight_power=3.0)

    def draw(prompts):
        return HFBackend(model, tokenizer).sample(prompts, num_samples=3, temperature=0.0, max_new_tokens=8)

    examples, stats = weighted_examples(draw, tokenizer, records, [2, 0], encoder, reward_functions(["label"]),
                                        include_teacher=True, **options)
    assert stats == {"mean_sample_reward": 0.0, "pairs": 2, "pairs_tied": 0, "kept": 2}
    assert [tokenizer.decode(e["input_ids"]).endswith(f"Explanation: It names the cause.\nRelevance: {label}<|im_end|>")
            for e, label in zip(examples, (2, 0))] == [True, True]
    assert [e["weight"] for e in examples] == [1.0, 1.0]
    # without the teacher every candidate of a pair ties: kept at weight 1 (the paper), or left out
    examples, stats = weighted_examples(draw, tokenizer, records, [2, 0], encoder, reward_functions(["label"]),
                                        include_teacher=False, **options)
    assert stats["pairs_tied"] == 2 and len(examples) == 6 and {e["weight"] for e in examples} == {1.0}
    examples, stats = weighted_examples(draw, tokenizer, records, [2, 0], encoder, reward_functions(["label"]),
                                        include_teacher=False, keep_ties=False, **options)
    assert examples == [] and stats["pairs_tied"] == 2


def test_qlora_without_a_gpu_is_a_clear_error(tiny_model):
    with pytest.raises(InputError, match="QLoRA .* needs a CUDA GPU"):
        load_student(StudentConfig(model_name_or_path=str(tiny_model), load_in_4bit=True))


def test_student_from_an_adapter_alone(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    model, tokenizer = load_student(StudentConfig(adapter=str(tmp_path / "adapter")))
    assert model.peft_config["default"].base_model_name_or_path == str(tiny_model)
    assert any(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="no student model"):
        StudentConfig()


def test_recipe_sections_and_overrides(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("distill:\n  learning_rate: 2.0e-4\n  lora_r: 64\n  model_name_or_path: m\n"
                      f"  output_dir: {tmp_path}\n  lora_target_modules: [q_proj, v_proj]\n")
    section = recipe_section(str(recipe), "distill")
    config, student = parse_configs((DistillConfig, StudentConfig), section, ["--learning_rate", "1e-4"])
    assert config.learning_rate == 1e-4 and student.lora_r == 64 and student.model_name_or_path == "m"
    assert student.lora_target_modules == ["q_proj", "v_proj"] and student.use_peft is True
    assert config.completion_only_loss is True and config.max_length is None and config.report_to == []
    with pytest.raises(RecipeError, match="has no 'refine:' section"):
        recipe_section(str(recipe), "refine")


def test_unknown_keys_and_options_are_errors_that_list_the_valid_ones(tmp_path):
    with pytest.raises(RecipeError) as error:
        parse_configs((DistillConfig, StudentConfig), {"learning_rat": 1.0}, [])
    message = str(error.value)
    assert "unknown key(s) in the recipe: learning_rat (did you mean learning_rate?)" in message
    assert "Valid keys: " in message and "lora_r" in message and "train_file" in message
    with pytest.raises(RecipeError, match=r"unknown command-line option\(s\): --lora_alph \(did you mean --lora_alpha\?\)"):
        parse_configs((DistillConfig, StudentConfig), {"output_dir": str(tmp_path), "model_name_or_path": "m"},
                      ["--lora_alph", "8"])
