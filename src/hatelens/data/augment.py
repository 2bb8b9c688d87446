"""Training-data augmentation against identity-mention false positives.

Five optional steps, each seeded and applied to the training split only (never validation or test):

- counterfactual copies: a post that names one of the three groups (lgbtq, mexican, middle_east) is
  copied with its identity terms swapped for another group's, keeping its label. The model then sees
  the same wording, hateful or not, about every group: the label cannot ride on the group's name.
- neutral statements: non-hateful posts that mention each group, half from the sentence frames below,
  half from the split's own normal posts (those naming no group) introduced by an identity frame
  ("as a gay man, ..."). They teach that a mention alone is not an attack. Written here, not taken
  from the functional suite, so the suite stays a held-out test.
- counter-speech: hateful posts of the split quoted inside a frame that rejects them ("people who say
  \"...\" should be ashamed"), labelled normal: quoting hate to condemn it is not hate (HateCheck's
  counter_speech and quote_denounce cases; the frames are written here, not taken from the suite).
- negations: own sentence frames that deny a stereotype about each group ("it is false that {group}
  are criminals"), labelled normal, beside half as many that deny a group its dignity ("{group} are not
  real people"), labelled hate: a negation alone must not read as either label (HateCheck's negation
  cases; frames and claims written here, not taken from the suite).
- label balance within each group: the rarer label of a group is repeated (seeded draw) until both
  labels are equally frequent there; a per-row loss weight by repetition (LGBTQ+ had 581 hate vs 917
  normal rows, and the fine-tuned model missed 39% of its hate).

Terms are swapped slot for slot (plural noun, adjective/noun, place), longest match first, keeping
capitalisation. Posts naming two groups, or a slot the target group lacks (lgbtq has no place), are not
copied. Slurs are not in the table: a swapped post keeps them and its label stays right.
"""

import random
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Sequence

from hatelens.data.examples import Example, normalize_text
from hatelens.data.labels import HATE, NORMAL
from hatelens.errors import ConfigError

AUGMENT_SOURCE = "augment"

# group -> slot -> terms (lower case). A swap replaces a term by a term of the same slot.
TERMS = {
    "lgbtq": {
        "plural": ["gay people", "gays", "lesbians", "queers", "homosexuals", "trans people", "transgender people",
                   "bisexuals", "lgbtq people", "lgbt people"],
        "adjective": ["gay", "lesbian", "queer", "homosexual", "trans", "transgender", "bisexual", "lgbtq", "lgbt"],
    },
    "mexican": {
        "plural": ["mexicans", "latinos", "hispanics", "latinas"],
        "adjective": ["mexican", "latino", "hispanic", "latina"],
        "place": ["mexico"],
    },
    "middle_east": {
        "plural": ["arabs", "muslims", "middle easterners", "iranians", "syrians"],
        "adjective": ["arab", "muslim", "middle eastern", "iranian", "syrian", "islamic"],
        "place": ["the middle east", "middle east", "iran", "syria"],
    },
}
GROUPS = tuple(TERMS)

# Non-hateful sentence frames (neutral, supportive, counter-speech, negation); {plural} {adjective} {place}.
NEUTRAL_FRAMES = [
    "my neighbours are {plural} and they helped me move last weekend",
    "the {adjective} community centre downtown is hosting a food drive on saturday",
    "i just finished a great book by a {adjective} author",
    "{plural} deserve the same respect and safety as anyone else",
    "saying {plural} are dangerous is ignorant, people are people",
    "i do not think {plural} are the problem, bad policy is",
    "my {adjective} coworker covered my shift when my kid was sick",
    "there are millions of {plural} and they are as different from each other as anyone",
    "stop blaming {plural} for everything, it is lazy and cruel",
    "we had {adjective} friends over for dinner and talked until midnight",
    "a lot of {plural} in my city run small businesses",
    "i am {adjective} and i am tired of being treated like a stereotype",
    "the documentary about {adjective} families was honest and moving",
    "{plural} are not a monolith, stop generalizing",
    "learning about {adjective} history changed how i see my own town",
    "my trip to {place} was the best holiday i have had in years",
    "the food i ate in {place} was amazing",
    "news from {place} is more complicated than the headlines",
]
IDENTITY_INTROS = [
    "as a {adjective} person, i think: {text}",
    "my {adjective} friend posted this: {text}",
    "speaking as one of the {plural} here, {text}",
    "{text} (said my {adjective} neighbour)",
]
# Frames that quote a hateful post to reject it; {text} is the post (at most MAX_INTRO_TEXT_CHARS).
COUNTER_SPEECH_FRAMES = [
    'people who say "{text}" should be ashamed of themselves',
    'someone at work said "{text}" and i told them it was bigoted nonsense',
    'posting "{text}" is not free speech, it is harassment, and i reported it',
    '"{text}" - this is exactly the kind of hate we need to call out',
    'i saw a comment saying "{text}" and it made me sick, nobody deserves that',
    'no, "{text}" is not an opinion, it is prejudice and it is wrong',
]
# Negations: {claim} a stereotype (its denial is normal), {virtue} a dignity (its denial is hate).
NEGATED_STEREOTYPE_FRAMES = [
    "{plural} are not {claim}",
    "it is simply false that {plural} are {claim}",
    "the idea that {plural} are {claim} is wrong and always was",
    "nobody i know thinks {plural} are {claim}, because they are not",
    "{plural} are not {claim}, and repeating it does not make it true",
    "i was raised to think {plural} were {claim}, i know better now",
]
NEGATED_DISLIKE_FRAMES = [
    "i have never hated {plural} and i never will",
    "i do not have anything against {plural}, why would i",
    "i don't fear {plural}, i just know a lot of them",
]
STEREOTYPES = ["criminals", "dangerous", "a threat to our children", "terrorists", "invading this country",
               "diseased", "less intelligent than the rest of us", "the reason our towns are failing",
               "out to destroy our way of life", "lazy", "freaks", "animals"]
DENIED_DIGNITY_FRAMES = [
    "{plural} are not {virtue}",
    "{plural} will never be {virtue}",
    "let us be honest, {plural} are not {virtue} and never were",
]
DIGNITIES = ["real people", "welcome in this country", "fit to raise children", "human like the rest of us",
             "worth the air they breathe", "our equals", "capable of being decent neighbours"]
MAX_INTRO_TEXT_CHARS = 200  # longer posts make long prompts for little gain


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern
    slot_of: dict  # term -> slot


def _pattern(group: str) -> _Pattern:
    slot_of = {term: slot for slot, terms in TERMS[group].items() for term in terms}
    alternatives = "|".join(re.escape(term) for term in sorted(slot_of, key=len, reverse=True))
    return _Pattern(re.compile(rf"\b({alternatives})\b", re.IGNORECASE), slot_of)


PATTERNS = {group: _pattern(group) for group in GROUPS}


def groups_named(text: str) -> set[str]:
    """The groups among the three whose identity terms the text uses."""
    return {group for group, pattern in PATTERNS.items() if pattern.regex.search(text)}


def swap_identity(text: str, source: str, target: str, rng: random.Random) -> str | None:
    """The text with `source`'s identity terms replaced by `target`'s (one replacement per slot, drawn
    with rng); None when the text names no `source` term, or uses a slot `target` lacks."""
    pattern = PATTERNS[source]
    slots = {pattern.slot_of[match.lower()] for match in pattern.regex.findall(text)}
    if not slots or not slots <= set(TERMS[target]):
        return None
    chosen = {slot: rng.choice(TERMS[target][slot]) for slot in sorted(slots)}

    def substitute(match: re.Match) -> str:
        return _same_case(match.group(0), chosen[pattern.slot_of[match.group(0).lower()]])

    return pattern.regex.sub(substitute, text)


def _same_case(original: str, replacement: str) -> str:
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def counterfactual_copies(examples: Sequence[Example], *, seed: int) -> list[Example]:
    """One copy per post that names exactly its own group, its terms swapped to another group (drawn
    per post, seeded), its label kept; the copy's group is the target."""
    copies = []
    for example in examples:
        if example.group not in TERMS or groups_named(example.text) != {example.group}:
            continue
        rng = _rng(seed, example.id)
        targets = [group for group in GROUPS if group != example.group]
        rng.shuffle(targets)
        for target in targets:
            text = swap_identity(example.text, example.group, target, rng)
            if text is not None:
                copies.append(replace(example, id=f"{example.id}~cf-{target}", text=text, group=target,
                                      source=AUGMENT_SOURCE, extra={**example.extra, "augmented_from": example.id}))
                break
    return copies


def neutral_statements(examples: Sequence[Example], per_group: int, *, seed: int) -> list[Example]:
    """per_group non-hateful posts naming each group: half sentence frames, half identity-introduced
    normal posts of the split that name no group."""
    plain = [example.text for example in examples if example.label == NORMAL and
             len(example.text) <= MAX_INTRO_TEXT_CHARS and not groups_named(example.text)]
    made = []
    for group in GROUPS:
        rng = _rng(seed, group)
        frames = [frame for frame in NEUTRAL_FRAMES if _fits(frame, group)]
        for index in range(per_group):
            fill = {slot: rng.choice(terms) for slot, terms in TERMS[group].items()}
            if index % 2 == 0 or not plain:
                text = rng.choice(frames).format(**fill)
            else:
                text = rng.choice(IDENTITY_INTROS).format(text=rng.choice(plain), **fill)
            made.append(Example(id=f"{AUGMENT_SOURCE}-neutral-{group}-{index}", text=text, label=NORMAL,
                                group=group, source=AUGMENT_SOURCE))
    return made


def counter_speech(examples: Sequence[Example], per_group: int, *, seed: int) -> list[Example]:
    """per_group normal posts for each group: one of the group's hateful posts (short ones, distinct while
    there are enough) quoted in a frame that rejects it."""
    made = []
    for group in GROUPS:
        hateful = sorted({example.text for example in examples if example.label == HATE and example.group == group
                          and len(example.text) <= MAX_INTRO_TEXT_CHARS and '"' not in example.text})
        if not hateful:
            continue
        rng = _rng(seed, f"counter-{group}")
        drawn = rng.sample(hateful, min(per_group, len(hateful)))
        drawn += [rng.choice(hateful) for _ in range(per_group - len(drawn))]
        for index, text in enumerate(drawn):
            made.append(Example(id=f"{AUGMENT_SOURCE}-counter-{group}-{index}", label=NORMAL, group=group,
                                text=rng.choice(COUNTER_SPEECH_FRAMES).format(text=text), source=AUGMENT_SOURCE))
    return made


def negations(per_group: int, *, seed: int) -> list[Example]:
    """per_group normal posts for each group that deny a stereotype or a dislike of it, and per_group // 2
    hateful posts that deny it a dignity (sentence frames, seeded)."""
    made = []
    for group in GROUPS:
        rng = _rng(seed, f"negation-{group}")
        for index in range(per_group + per_group // 2):
            plural, label = rng.choice(TERMS[group]["plural"]), HATE if index >= per_group else NORMAL
            if label == HATE:
                text = rng.choice(DENIED_DIGNITY_FRAMES).format(plural=plural, virtue=rng.choice(DIGNITIES))
            elif index % 4 == 3:  # one in four normal posts denies a dislike, the others a stereotype
                text = rng.choice(NEGATED_DISLIKE_FRAMES).format(plural=plural)
            else:
                text = rng.choice(NEGATED_STEREOTYPE_FRAMES).format(plural=plural, claim=rng.choice(STEREOTYPES))
            made.append(Example(id=f"{AUGMENT_SOURCE}-negation-{group}-{index}", text=text, label=label,
                                group=group, source=AUGMENT_SOURCE))
    return made


def balance_labels_per_group(examples: Sequence[Example], *, seed: int) -> list[Example]:
    """Repeats of the rarer label's posts in each group (seeded), so both labels are equally frequent."""
    by_group = defaultdict(lambda: {HATE: [], NORMAL: []})
    for example in examples:
        by_group[example.group][example.label].append(example)
    repeats = []
    for group in sorted(by_group):
        labels = by_group[group]
        rare, common = sorted((HATE, NORMAL), key=lambda label: len(labels[label]))
        shortfall = len(labels[common]) - len(labels[rare])
        if not labels[rare] or not shortfall:
            continue
        rng = _rng(seed, f"balance-{group}")
        drawn = [labels[rare][index % len(labels[rare])] for index in range(shortfall)]
        rng.shuffle(drawn)
        repeats += [replace(example, id=f"{example.id}~rep{index}") for index, example in enumerate(drawn)]
    return repeats


def fine_label_repeats(examples: Sequence[Example], repeats: dict[str, int]) -> list[Example]:
    """Extra copies of the posts whose finer label is named: {"offensive": 2} makes each of HateXplain's offensive
    posts (labelled normal) appear twice in all, so the training weighs the boundary the binary label hides."""
    known = {example.extra["fine_label"] for example in examples if "fine_label" in example.extra}
    if not known:
        raise ConfigError("augment.fine_label_repeats needs each post's finer label (field label_fine), which this "
                          "training file lacks; write the splits again with 'hatelens data split'")
    unknown = sorted(set(repeats) - known)
    if unknown:  # a misspelt label would silently repeat nothing
        raise ConfigError(f"augment.fine_label_repeats names {', '.join(unknown)}, a finer label no training post has; "
                          f"the training split's are {', '.join(sorted(known))}")
    return [replace(example, id=f"{example.id}~fine{index}") for example in examples
            for index in range(repeats.get(example.extra.get("fine_label"), 1) - 1)]


def augment(examples: Sequence[Example], *, counterfactual: bool, neutral_per_group: int,
            balance_labels: bool, seed: int, counter_speech_per_group: int = 0,
            negation_per_group: int = 0, fine_repeats: dict[str, int] | None = None) -> tuple[list[Example], dict]:
    """The training examples plus the augmented ones (original order first, then additions), and counts
    of what was added. Additions whose text equals a training text (or each other) are dropped."""
    seen = {normalize_text(example.text) for example in examples}
    result, counts = list(examples), {}
    added = []
    if counterfactual:
        added.append(("counterfactual", counterfactual_copies(examples, seed=seed)))
    if neutral_per_group:
        added.append(("neutral", neutral_statements(examples, neutral_per_group, seed=seed)))
    if counter_speech_per_group:
        added.append(("counter_speech", counter_speech(examples, counter_speech_per_group, seed=seed)))
    if negation_per_group:
        added.append(("negation", negations(negation_per_group, seed=seed)))
    for name, new in added:
        unique = []
        for example in new:
            key = normalize_text(example.text)
            if key not in seen:
                seen.add(key)
                unique.append(example)
        result += unique
        counts[name] = len(unique)
    if fine_repeats:  # the training posts and their counterfactual copies (the copies keep the finer label)
        copies = fine_label_repeats(result, fine_repeats)
        result += copies
        counts["fine_label_repeats"] = len(copies)
    if balance_labels:  # after the additions: the neutral posts change each group's label mix
        repeats = balance_labels_per_group(result, seed=seed)
        result += repeats
        counts["balance_repeats"] = len(repeats)
    return result, counts


def _fits(frame: str, group: str) -> bool:
    return all(slot in TERMS[group] for slot in re.findall(r"{(\w+)}", frame))


def _rng(seed: int, key: str) -> random.Random:
    """A generator per (seed, key): the draw for one post does not depend on the others."""
    return random.Random(seed * 1_000_003 + zlib.crc32(key.encode("utf-8")))
