"""The student that is trained is the student that is served: its settings travel with it, its
prompts do not change with the calendar, and what it was not trained for is said."""
import datetime as real_datetime
import json
import warnings

import numpy as np
import pytest
from transformers import AutoTokenizer
from transformers.utils import chat_template_utils

from pyterrier_reasonrank import QueryGenerator, ReasonRanker
from pyterrier_reasonrank.prompts import FORMAT_VERSION, PromptEncoder, QueryPromptEncoder
from pyterrier_reasonrank.settings import FILENAME, StudentSettings, read_settings
from pyterrier_reasonrank.testing import build_tiny_model
from pyterrier_reasonrank.training.distillation import DistillConfig, distill, training_examples
from pyterrier_reasonrank.training.student import StudentConfig
from synthetic import write_annotations

LONG_DOCUMENT = "the moon pulls the ocean and the tides follow it around the earth " * 40


def on(day: str):
    """A stand-in for ``datetime`` whose today is ``day`` (what chat templates write as "Today Date")."""
    class Frozen(real_datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls.strptime(day, "%Y-%m-%d")

    return Frozen


@pytest.fixture(scope="module")
def llama3_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("llama3"), chat_template="llama3")


@pytest.fixture(scope="module")
def student(llama3_model, tmp_path_factory, vocabulary):
    """A tiny student with a Llama-3-style template, distilled with max_doc_tokens 64 on 2026-11-23."""
    work = tmp_path_factory.mktemp("student")
    data = write_annotations(vocabulary, work / "train.jsonl", 16)
    config = DistillConfig(output_dir=str(work / "distill"), train_file=str(data), max_doc_tokens=64, max_steps=2,
                           per_device_train_batch_size=8, save_strategy="steps", save_steps=1, disable_tqdm=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chat_template_utils, "datetime", on("2026-11-23"))
        distill(config, StudentConfig(model_name_or_path=str(llama3_model), lora_r=4, lora_alpha=8,
                                      lora_target_modules=["q_proj", "v_proj"]))
        tokenizer = AutoTokenizer.from_pretrained(work / "distill")
        examples, _ = training_examples(tokenizer, read_settings(str(work / "distill")), config,
                                        [{"query": "about tides", "text": LONG_DOCUMENT, "label": 2,
                                          "explanation": "It says why."}])
    prompt = [t for t, m in zip(examples[0]["input_ids"], examples[0]["completion_mask"]) if not m]
    return work / "distill", prompt


def test_the_student_is_served_its_training_prompt_on_another_day(student, monkeypatch):
    path, training_prompt = student
    monkeypatch.setattr(chat_template_utils, "datetime", on("2027-03-14"))
    ranker = ReasonRanker(adapter=str(path)).load()  # no option given
    served = ranker.encoder.encode("about tides", LONG_DOCUMENT)
    assert served == training_prompt  # token for token
    tokenizer = ranker.student.engine.tokenizer
    assert ranker.encoder.max_doc_tokens == 64 and "Today Date: 26 Jul 2024" in tokenizer.decode(served)
    # what an unpinned template would have written on each day
    plain = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert "Today Date: 14 Mar 2027" in plain


def test_prompts_are_the_same_on_any_date_for_every_template(llama3_model, tiny_model, monkeypatch):
    for model in (llama3_model, tiny_model):
        tokenizer = AutoTokenizer.from_pretrained(model)
        prompts = []
        for day in ("2026-11-23", "2031-07-01"):
            monkeypatch.setattr(chat_template_utils, "datetime", on(day))
            prompts.append((PromptEncoder(tokenizer).encode("q", "d"), QueryPromptEncoder(tokenizer).encode("q")))
        assert prompts[0] == prompts[1]


def test_the_settings_file_says_what_shaped_the_input(student, llama3_model):
    path, _ = student
    settings = json.loads((path / FILENAME).read_text())
    assert settings["format_version"] == FORMAT_VERSION and settings["stage"] == "distill"
    assert settings["tasks"] == ["explain", "direct"] and settings["base_model"] == str(llama3_model)
    assert (settings["max_query_tokens"], settings["max_doc_tokens"], settings["max_question_tokens"]) == (512, 64, 1024)
    assert settings["template_variables"] == {"date_string": "26 Jul 2024", "enable_thinking": False}
    assert len(settings["chat_template_sha256"]) == 64
    assert settings["labels"] == {"0": "irrelevant", "1": "partially relevant", "2": "relevant"}
    # each checkpoint is a self-describing student too
    assert json.loads((path / "checkpoint-1" / FILENAME).read_text())["max_doc_tokens"] == 64
    card = (path / "README.md").read_text()
    assert card.startswith(f"---\nbase_model: {llama3_model}\nlibrary_name: peft\npipeline_tag: text-generation\n")
    assert "- pyterrier\n" in card and "max_doc_tokens: 64" in card and "train_sha256" in card


def test_an_explicit_option_wins_with_a_warning(student):
    path, _ = student
    with pytest.warns(UserWarning, match=r"trained \(or calibrated\) with max_doc_tokens=64; serving it with "
                                         r"max_doc_tokens=32 as asked"):
        ranker = ReasonRanker(adapter=str(path), max_doc_tokens=32).load()
    assert ranker.encoder.max_doc_tokens == 32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ReasonRanker(adapter=str(path), max_doc_tokens=64, mode="direct").load()  # as trained: nothing to say


def test_a_task_the_student_was_not_trained_for_is_said(student):
    path, _ = student
    with pytest.warns(UserWarning, match=r"trained for \['explain', 'direct'\], not 'queries'"):
        QueryGenerator(adapter=str(path)).load()


def test_an_unknown_prompt_format_is_refused(student, tmp_path):
    import shutil

    path, _ = student
    copy = shutil.copytree(path, tmp_path / "future", ignore=shutil.ignore_patterns("checkpoint-*"))
    settings = json.loads((copy / FILENAME).read_text())
    (copy / FILENAME).write_text(json.dumps({**settings, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match=rf"trained with prompt format version {FORMAT_VERSION + 1}, and this "
                                         r"pyterrier-reasonrank knows versions \[1, 2\]"):
        ReasonRanker(adapter=str(copy)).load()


def test_a_student_trained_with_format_1_is_served_with_format_1(student, tmp_path):
    import shutil

    from pyterrier_reasonrank.prompts import INSTRUCTIONS

    path, _ = student
    copy = shutil.copytree(path, tmp_path / "v1", ignore=shutil.ignore_patterns("checkpoint-*"))
    settings = json.loads((copy / FILENAME).read_text())
    (copy / FILENAME).write_text(json.dumps({**settings, "format_version": 1}))
    old, new = (ReasonRanker(adapter=str(folder), mode="direct").encoder for folder in (copy, path))
    assert old.format_version == 1 and new.format_version == FORMAT_VERSION == 2
    tokenizer = old.tokenizer
    assert INSTRUCTIONS["direct"] in tokenizer.decode(old.encode("q", "d"))
    assert INSTRUCTIONS["direct"] not in tokenizer.decode(new.encode("q", "d"))


def test_a_model_without_settings_gets_the_library_defaults(tiny_model):
    assert read_settings(str(tiny_model)) is None
    ranker = ReasonRanker(str(tiny_model)).load()
    assert (ranker.encoder.max_query_tokens, ranker.encoder.max_doc_tokens) == (512, 1024)
    assert StudentSettings().template_variables == {"date_string": "26 Jul 2024", "enable_thinking": False}


def test_a_student_saved_by_a_newer_library_warns_when_loaded(student, tmp_path):
    import shutil

    from pyterrier_reasonrank import __version__

    path, _ = student
    copy = shutil.copytree(path, tmp_path / "newer", ignore=shutil.ignore_patterns("checkpoint-*"))
    settings = json.loads((copy / FILENAME).read_text())
    assert settings["pyterrier_reasonrank"] == __version__
    (copy / FILENAME).write_text(json.dumps({**settings, "pyterrier_reasonrank": "99.0"}))
    with pytest.warns(UserWarning, match=rf"saved by pyterrier-reasonrank 99.0, newer than this {__version__}"):
        read_settings(str(copy))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same version, or an older one, says nothing
        read_settings(str(path))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline Hugging Face Hub cache: ``hub(repo, folder, absent=...)`` holds ``folder``'s files as ``repo``'s at
    ``commit`` (its default branch's when ``main``), with ``extra`` files (name -> text), and the Hub's record that
    ``absent`` files are not in it (a file neither held nor recorded is unknown offline)."""
    import shutil

    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def put(repo, folder, *, drop=(), absent=(), extra=None, commit="0" * 40, main=True):
        root = cache / f"models--{repo.replace('/', '--')}"
        (root / "refs").mkdir(parents=True, exist_ok=True)
        if main:
            (root / "refs" / "main").write_text(commit)
        shutil.copytree(folder, root / "snapshots" / commit, ignore=shutil.ignore_patterns("checkpoint-*", *drop))
        for name, text in (extra or {}).items():
            (root / "snapshots" / commit / name).write_text(text)
        for name in absent:
            (root / ".no_exist" / commit).mkdir(parents=True, exist_ok=True)
            (root / ".no_exist" / commit / name).touch()
        return repo

    return put


def test_a_student_on_the_hub_is_served_with_its_own_tokenizer_and_settings(student, hub, tmp_path):
    """An adapter on the Hub brings the tokenizer (chat template) and settings it was trained with, as a local one
    does; here its template differs from its base model's."""
    import shutil

    from pyterrier_reasonrank.prompts import chat_template_sha256

    path, _ = student
    own = shutil.copytree(path, tmp_path / "own-template", ignore=shutil.ignore_patterns("checkpoint-*"))
    tokenizer = AutoTokenizer.from_pretrained(own)
    tokenizer.chat_template = tokenizer.chat_template.replace("Today Date", "Date of today")
    tokenizer.save_pretrained(own)
    settings = json.loads((own / FILENAME).read_text())
    (own / FILENAME).write_text(json.dumps({**settings, "chat_template_sha256": chat_template_sha256(tokenizer)}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the template is the one trained with: nothing to say
        # transformers asks for config.json, which an adapter has not (the Hub would say so)
        ranker = ReasonRanker(adapter=hub("someone/tides-student", own, absent=["config.json"])).load()
    assert ranker.encoder.max_doc_tokens == 64
    served = ranker.encoder.encode("about tides", LONG_DOCUMENT)
    assert "Date of today: 26 Jul 2024" in tokenizer.decode(served)
    assert served == PromptEncoder(tokenizer, max_doc_tokens=64,
                                   template_variables=settings["template_variables"]).encode("about tides",
                                                                                              LONG_DOCUMENT)


def test_settings_the_hub_cannot_say_anything_about_are_said_not_silently_defaulted(student, hub, tiny_model):
    path, _ = student
    known = hub("someone/no-settings", path, drop=[FILENAME], absent=[FILENAME])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_settings(known) is None  # the Hub said it has none: a model not trained here
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # offline: a plain model, or a repository the cache holds whole, lacks it
        assert read_settings(hub("someone/base", tiny_model)) is None
        assert read_settings(hub("someone/whole", path, drop=[FILENAME], extra={".gitattributes": ""})) is None
    unknown = hub("someone/unread-settings", path, drop=[FILENAME])  # an adapter, offline, never fetched
    with pytest.warns(RuntimeWarning, match=r"could not tell whether 'someone/unread-settings' has "
                                            rf"{FILENAME} \(.*\); it is served with the library's default prompt "
                                            r"settings, as a model not trained by this library"):
        assert read_settings(unknown) is None


def test_a_student_is_served_on_the_revision_of_its_base_model_it_was_trained_on(hub, tmp_path, vocabulary):
    """Training loads the base at ``model_revision`` and records it in the adapter's PEFT config; serving the
    adapter loads the base at that revision, not at the default branch's newer weights."""
    import pandas as pd

    old, new = "a" * 40, "b" * 40
    bases = {commit: build_tiny_model(tmp_path / commit[0], seed=seed) for commit, seed in ((old, 0), (new, 1))}
    hub("someone/tiny", bases[old], commit=old, main=False)
    hub("someone/tiny", bases[new], commit=new, absent=["adapter_config.json"])  # main: the newer weights
    data = write_annotations(vocabulary, tmp_path / "train.jsonl", 8)
    config = DistillConfig(output_dir=str(tmp_path / "distill"), train_file=str(data), max_steps=1,
                           per_device_train_batch_size=8, save_strategy="no", disable_tqdm=True)
    distill(config, StudentConfig(model_name_or_path="someone/tiny", model_revision=old, lora_r=4, lora_alpha=8,
                                  lora_target_modules=["q_proj", "v_proj"]))
    adapter = str(tmp_path / "distill")
    recorded = json.loads((tmp_path / "distill" / "adapter_config.json").read_text())
    assert (recorded["base_model_name_or_path"], recorded["revision"]) == ("someone/tiny", old)
    inp = pd.DataFrame({"qid": ["1", "1"], "query": ["tides", "tides"], "docno": ["a", "b"],
                        "text": ["the moon pulls the ocean", "volcanoes erupt"]})
    served = ReasonRanker(adapter=adapter, mode="direct")(inp).score.to_numpy()
    on_old, on_new = (ReasonRanker(str(bases[commit]), adapter=adapter, mode="direct")(inp).score.to_numpy()
                      for commit in (old, new))
    assert served == pytest.approx(on_old, abs=1e-6) and not np.allclose(served, on_new, atol=1e-4)
