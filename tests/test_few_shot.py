"""k-shot prompting: `few_shot: {k, seed}` draws examples from the training split, stratified by
label x group, seeded, hashed into the prompt hash, and never scored (the leakage check)."""

import json
from collections import Counter

import pytest

from hatelens.backends import prompts
from hatelens.data import load_examples
from hatelens.errors import ConfigError, DataError
from hatelens.evaluation.evaluate import check_no_leakage

GROUPS = ("lgbtq", "mexican", "middle_east")


@pytest.fixture
def pool(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"id": f"{label}-{group}-{index}", "text": f"{label[0]}{group[:2]}{index}" + "!" * (10 * index),
             "label": label, "group": group}
            for label in ("hate", "normal") for group in GROUPS for index in range(5)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def k_shot_template(tmp_path, pool, **spec) -> prompts.PromptTemplate:
    path = tmp_path / f"kshot_{len(list(tmp_path.glob('kshot_*')))}.yaml"
    spec = {"from": str(pool), **spec}
    path.write_text('name: kshot\nsystem: Label posts.\nuser: "{examples}\\n\\nPost: {text}"\n'
                    'label_words: {hate: " hate", normal: " normal"}\n'
                    f"few_shot: {json.dumps(spec)}\n")
    return prompts.load_template(str(path))


def strata(template) -> Counter:
    return Counter(tuple(shot.id.split("-")[:2]) for shot in template.few_shot)


def test_k_shots_are_spread_over_label_and_group(tmp_path, pool):
    template = k_shot_template(tmp_path, pool, k=8, seed=0)
    assert len(template.few_shot) == 8
    assert len(strata(template)) == 6 and max(strata(template).values()) == 2  # every stratum, none thrice
    labels = [shot.label for shot in template.few_shot]
    assert labels != sorted(labels)  # a seeded order, not grouped by label
    user = template.messages("the post")[-1]["content"]
    assert all(f"Post: {shot.text}\nAnswer: {shot.label}" in user for shot in template.few_shot)


def test_the_draw_is_seeded_and_hashed(tmp_path, pool):
    first = k_shot_template(tmp_path, pool, k=6, seed=0)
    again = k_shot_template(tmp_path, pool, k=6, seed=0)
    other = k_shot_template(tmp_path, pool, k=6, seed=1)
    assert first.few_shot == again.few_shot and first.hash == again.hash
    assert first.few_shot != other.few_shot and first.hash != other.hash
    assert first.drawn and not prompts.load_template("policy_persona").drawn


def test_max_chars_leaves_long_posts_out(tmp_path, pool):
    template = k_shot_template(tmp_path, pool, k=12, seed=0, max_chars=15)  # posts 0 and 1 of each stratum
    assert all(len(shot.text) <= 15 for shot in template.few_shot)
    with pytest.raises(ConfigError, match="only 12 eligible posts"):
        k_shot_template(tmp_path, pool, k=13, seed=0, max_chars=15)


def test_drawn_shots_in_the_evaluated_data_are_refused(tmp_path, pool):
    template = k_shot_template(tmp_path, pool, k=4, seed=0)
    with pytest.raises(DataError, match="4 evaluated example"):
        check_no_leakage(load_examples(pool).examples, template)


@pytest.mark.parametrize("spec, message", [({"seed": 0}, "needs k"), ({"k": 2, "shots": 3}, "unknown: shots"),
                                           ({"k": 2, "from": "missing.jsonl"}, "missing.jsonl, which is not there")])
def test_a_bad_few_shot_section_is_a_config_error(tmp_path, pool, spec, message):
    with pytest.raises(ConfigError, match=message):
        k_shot_template(tmp_path, pool, **{"from": str(pool), **spec})
