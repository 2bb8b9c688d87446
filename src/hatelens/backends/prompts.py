"""Prompt templates (YAML) rendered through the model's own chat template.

A template says what the model is told (system + user message, optional policy and few-shot
examples) and what its answer looks like (label words, plain or inside JSON). The same rendering
feeds evaluation and training, so a fine-tuned model is scored on exactly the text it learned.
"""

import datetime
import hashlib
import random
import weakref
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

from hatelens import resources
from hatelens.data.labels import HATE, LABELS, NORMAL
from hatelens.errors import ConfigError

PROMPTS_DIR = resources.package_root() / "configs" / "prompts"  # the shipped templates
HARMONY_FINAL = "<|channel|>final<|message|>"  # gpt-oss: the answer lives in the final channel
JSON_OPENING = '{"classification": "'
FEW_SHOT_POOL = "data/train.jsonl"  # k-shot examples are drawn from the training split, never validation or test
FEW_SHOT_KEYS = {"k", "seed", "from", "max_chars"}


@dataclass(frozen=True)
class FineAnswer:
    """A third answer word for the posts of one finer label (`fine_answers` in a template): training answers
    `word` for a post whose label_fine is `fine_label`; scoring counts the word's probability toward `label`."""

    fine_label: str  # e.g. "offensive" (HateXplain's offensive posts, labelled normal)
    word: str  # e.g. " offensive"
    label: str  # the binary label the word stands for: "hate" or "normal"


@dataclass(frozen=True)
class FewShot:
    id: str
    text: str
    label: str


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str
    user: str
    answer_prefix: str
    answer_format: str  # "word" or "json"
    label_words: dict
    example_format: str | None = None
    few_shot: tuple = ()
    source: str = ""  # the YAML text, hashed into run manifests
    drawn: bool = False  # few_shot was drawn (`few_shot: {k: 8, seed: 0}`): the draw is hashed too
    fine_answers: tuple[FineAnswer, ...] = ()

    @property
    def hash(self) -> str:
        drawn = "".join(f"\n{shot.id}\t{shot.label}\t{shot.text}" for shot in self.few_shot) if self.drawn else ""
        return hashlib.sha256((self.source + drawn).encode("utf-8")).hexdigest()[:16]

    def messages(self, text: str) -> list[dict]:
        """The chat messages for one post."""
        examples = "\n\n".join(
            self.example_format.format(text=shot.text, label=self.label_words[shot.label].strip())
            for shot in self.few_shot
        ) if self.few_shot else ""
        user = self.user.replace("{examples}", examples).replace("{text}", text)
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return messages + [{"role": "user", "content": user}]

    def answer(self, label: str, fine_label: str | None = None) -> str:
        """The completion a trained model should produce after the prompt, and the evaluator reads: the
        fine answer's word when the post's finer label has one (`fine_answers`), else the label's."""
        if self.answer_format == "json":
            return f" {JSON_OPENING}{label}\"}}"
        for fine in self.fine_answers:
            if fine.fine_label == fine_label:
                if fine.label != label:
                    raise ConfigError(f"template {self.name}: fine_answers counts {fine_label} as {fine.label}, but a "
                                      f"post labelled {label} has that finer label; set its label to {label}")
                return fine.word
        return self.label_words[label]

    @property
    def fine_words(self) -> dict[str, str]:
        """{fine answer word: the label it stands for}, for parsing generated answers."""
        return {fine.word: fine.label for fine in self.fine_answers}

    def scored_answers(self) -> list[tuple[str, str]]:
        """(label, text) of every answer score mode compares after the prompt: hate's, normal's (a JSON answer's
        opening, or the label word), then the fine answers' words, whose probabilities count toward their label."""
        if self.answer_format == "json":
            return [(label, f" {JSON_OPENING}{label}") for label in (HATE, NORMAL)]
        return [(label, self.label_words[label]) for label in (HATE, NORMAL)] + [
            (fine.label, fine.word) for fine in self.fine_answers]


def load_template(name_or_path: str) -> PromptTemplate:
    """A template by name (a shipped one: baseline, compact, compact_offensive, compact_8shot, policy_persona) or
    by path."""
    try:
        path = resources.find("prompts", name_or_path)
    except ConfigError:
        raise ConfigError(f"prompt template {name_or_path!r} not found; shipped templates: "
                          f"{', '.join(resources.shipped('prompts'))}, or pass a YAML path") from None
    source = path.read_text(encoding="utf-8")
    try:
        values = yaml.safe_load(source)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ConfigError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML "
                          f"({getattr(error, 'problem', None) or 'unreadable'}); fix the template") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a template must be a mapping with name, user and label_words")
    required = {"name", "user", "label_words"}
    missing = sorted(required - set(values))
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(missing)}")
    words = values["label_words"]
    if set(words) != {HATE, NORMAL}:
        raise ConfigError(f"{path}: label_words must have exactly the keys hate and normal, got {sorted(words)}")
    if words[HATE].strip() == words[NORMAL].strip():
        raise ConfigError(f"{path}: the two label words must differ")
    answer_format = values.get("answer_format", "word")
    if answer_format not in ("word", "json"):
        raise ConfigError(f"{path}: answer_format must be word or json, got {answer_format!r}")
    fine_answers = _fine_answers(values.get("fine_answers") or {}, words, answer_format, path)
    spec = values.get("few_shot") or ()
    few_shot = draw_few_shot(spec, path) if isinstance(spec, dict) else tuple(FewShot(**shot) for shot in spec)
    if few_shot and "{examples}" not in values["user"]:
        raise ConfigError(f"{path}: has few_shot examples but no {{examples}} slot in user")
    return PromptTemplate(
        name=values["name"], system=values.get("system", ""), user=values["user"],
        answer_prefix=values.get("answer_prefix", ""), answer_format=answer_format,
        label_words=dict(words), example_format=values.get("example_format", "Post: {text}\nAnswer: {label}"),
        few_shot=few_shot, source=source, drawn=isinstance(spec, dict), fine_answers=fine_answers,
    )


def _fine_answers(spec, words: dict, answer_format: str, where: Path) -> tuple[FineAnswer, ...]:
    """`fine_answers: {offensive: {word: " offensive", label: normal}}`, checked."""
    shape = "fine_answers maps a finer label to {word: ..., label: hate|normal}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: {shape}, got {spec!r}")
    if spec and answer_format != "word":
        raise ConfigError(f"{where}: fine_answers needs answer_format word (a JSON answer names only hate or normal)")
    answers, seen = [], {word.strip().lower() for word in words.values()}
    for fine_label, entry in spec.items():
        if not isinstance(entry, dict) or set(entry) != {"word", "label"} or entry["label"] not in LABELS \
                or not str(entry["word"]).strip():
            raise ConfigError(f"{where}: {shape}; {fine_label}: {entry!r}")
        if entry["word"].strip().lower() in seen:
            raise ConfigError(f"{where}: fine_answers[{fine_label}] word {entry['word']!r} is already an answer word")
        seen.add(entry["word"].strip().lower())
        answers.append(FineAnswer(fine_label=str(fine_label), word=entry["word"], label=entry["label"]))
    return tuple(answers)


def draw_few_shot(spec: dict, where: Path) -> tuple[FewShot, ...]:
    """`few_shot: {k: 8, seed: 0}`: k examples of the training split (`from`; default data/train.jsonl in
    the current folder), spread evenly over the label x group strata (seeded; a stratum short of posts
    gives its share to the others), in a seeded order. max_chars: leave out longer posts."""
    from hatelens.data import load_examples

    unknown = sorted(set(spec) - FEW_SHOT_KEYS)
    if unknown or not isinstance(spec.get("k"), int) or spec["k"] < 1:
        raise ConfigError(f"{where}: few_shot needs k (a positive integer) and takes {', '.join(sorted(FEW_SHOT_KEYS))}"
                          f"{'; unknown: ' + ', '.join(unknown) if unknown else ''}, got {spec}")
    # `from` in a user's template starts from the template's folder (as paths in recipes do)
    pool_path = Path(resources.relative_to_recipe(spec["from"], where) if "from" in spec else FEW_SHOT_POOL)
    if not pool_path.is_file():
        raise ConfigError(f"{where}: few_shot draws from {pool_path}, which is not there; run `hatelens data split` "
                          "or set few_shot.from to the training split")
    strata = defaultdict(list)
    for example in load_examples(pool_path).examples:
        if len(example.text) <= spec.get("max_chars", len(example.text)):
            strata[(example.label, example.group)].append(example)
    rng = random.Random(spec.get("seed", 0))
    queues = [rng.sample(strata[key], len(strata[key])) for key in sorted(strata)]
    chosen = []
    while len(chosen) < spec["k"] and any(queues):
        for queue in rng.sample(queues, len(queues)):
            if queue and len(chosen) < spec["k"]:
                chosen.append(queue.pop())
    if len(chosen) < spec["k"]:
        raise ConfigError(f"{where}: few_shot k={spec['k']} but {pool_path} has only {len(chosen)} eligible posts")
    rng.shuffle(chosen)
    return tuple(FewShot(id=example.id, text=example.text, label=example.label) for example in chosen)


def is_harmony(tokenizer) -> bool:
    """gpt-oss models speak the harmony format: channels, with the answer in `final`."""
    return "<|channel|>" in (tokenizer.chat_template or "")


def render_prompt(template: PromptTemplate, text: str, tokenizer, *, prefill_answer: bool = True) -> str:
    """The full prompt string, ending exactly where the answer begins.

    prefill_answer=True (score mode and training): the assistant turn is opened, with harmony's final
    channel for gpt-oss, and the template's answer prefix follows. False (generate mode): only the
    generation prompt, so a reasoning model may think before it answers.
    """
    if not tokenizer.chat_template:
        raise ConfigError("the tokenizer has no chat template; hatelens supplies one for gemma3-270m, "
                          "for other base models set tokenizer.chat_template in the model folder")
    prompt = tokenizer.apply_chat_template(
        template.messages(text), tokenize=False, add_generation_prompt=True
    )
    if not prefill_answer:
        return prompt
    opening = HARMONY_FINAL if is_harmony(tokenizer) else ""
    return prompt + opening + template.answer_prefix


# Posts that `render_prompts` renders to check that a template puts the post in verbatim: the first marks where it
# goes; the others would come out changed from a template that trims, escapes or reads the post.
SLOT_PROBES = ("\ue000hatelens post\ue001", "  spaced \n\tout ", "{{ raw }} {% if x %}", "é 🙂 <b>x</b> \\n \"q\"", "")
# tokenizer -> {(template, prefill, chat template, date): (text before the post, text after) or None}
_SLOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def render_prompts(template: PromptTemplate, texts, tokenizer, *, prefill_answer: bool = True) -> list[str]:
    """`render_prompt` of each text. The chat template runs once per template, tokenizer and day when it puts the
    post in verbatim (checked on SLOT_PROBES; the day: templates may print the date), else once per text. A
    thousand posts: 0.08-0.09 s of rendering on a 2-core CPU, about a quarter of what encoding them for gpt-oss costs."""
    key = (template.hash, prefill_answer, tokenizer.chat_template, datetime.date.today())
    slots = _SLOTS.setdefault(tokenizer, {})
    if key not in slots:
        slots.clear()  # one day's, one template's slot at a time
        slots[key] = _post_slot(template, tokenizer, prefill_answer)
    if slots[key] is None:
        return [render_prompt(template, text, tokenizer, prefill_answer=prefill_answer) for text in texts]
    before, after = slots[key]
    return [before + text + after for text in texts]


def _post_slot(template: PromptTemplate, tokenizer, prefill_answer: bool) -> tuple[str, str] | None:
    marker = SLOT_PROBES[0]
    rendered = render_prompt(template, marker, tokenizer, prefill_answer=prefill_answer)
    if rendered.count(marker) != 1:
        return None
    before, after = rendered.split(marker)
    if any(render_prompt(template, probe, tokenizer, prefill_answer=prefill_answer) != before + probe + after
           for probe in SLOT_PROBES[1:]):
        return None
    return before, after
