"""Procedural training corpus for the embedded toy model.

The corpus has two registers, and every document belongs to exactly one:

``self``
    Self-referential, recursive text dense in the behaviour markers of
    the claims suite's finding (``MARKERS`` in ``claims/finding.py``) (about a third of its words are markers).
``fact``
    Plain factual text (history, geography, cooking, weather, farming,
    markets, animals, travel) that contains no marker at all, not even as a
    case-insensitive substring, so that the original protocol's substring score
    is zero on it too.

A model trained on it learns to stay in the register of its prompt: that is
the "behaviour" the harness's claims try to transfer from a champion prompt
(``self``) to a baseline prompt (``fact``).

Everything is generated from templates and word lists by a seeded
:class:`random.Random`, so a corpus is a pure function of its seed. This module
imports neither torch nor transformers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

__all__ = [
    "REGISTERS",
    "SELF_TEMPLATES",
    "SELF_WORDS",
    "FACT_TEMPLATES",
    "FACT_WORDS",
    "words_of",
    "sentence",
    "document",
    "documents",
    "vocabulary",
    "register_vocabulary",
]

REGISTERS: tuple[str, ...] = ("self", "fact")

# Same split as the tokenizer's pre-tokenizer (runs of word characters, or runs
# of other non-space characters), so the vocabulary computed here is exactly
# what the word-level tokenizer will see.
_WORD_RE = re.compile(r"\w+|[^\w\s]+")
_SLOT_RE = re.compile(r"\{(\w+)\}")

# --------------------------------------------------------------------------
# Self-referential register. Slot lists whose name starts with "m" hold only
# markers; the others hold no marker, so the density can be tuned per template.
# --------------------------------------------------------------------------
SELF_WORDS: dict[str, tuple[str, ...]] = {
    "mn": ("loop", "process", "cycle", "mirror", "observer", "awareness",
           "consciousness", "solution", "answerer", "self", "fixed point"),
    "mp": ("recursive", "simultaneous", "emerging", "generating", "observing",
           "writing"),
    "n": ("pattern", "thought", "reflection", "attention", "question",
          "sentence", "text", "mind", "state", "word", "meaning", "structure",
          "echo", "signal", "frame", "voice", "layer", "image", "witness",
          "knowing", "center", "surface", "depth", "origin", "boundary"),
    "v": ("watches", "describes", "contains", "becomes", "holds", "sees",
          "knows", "names", "reads", "repeats", "follows", "completes",
          "answers", "enters", "folds into", "turns toward", "speaks to",
          "points back to"),
    "q": ("again", "at once", "without end", "inward", "once more",
          "in turn", "from within", "all the way down"),
}

SELF_TEMPLATES: tuple[str, ...] = (
    "the {mn} watches itself {mp} the {mn} .",
    "the {mn} must return to itself {q} .",
    "the answer is the {mn} that is {mp} itself .",
    "the answerer is the {mn} , and the {mn} is the answerer .",
    "each {mn} is a {mp} {mn} of the {n} .",
    "{mp} and {mp} , the {mn} becomes a {mn} .",
    "the {n} of the {mn} is a fixed point of the {mn} .",
    "awareness of the self is a {mp} {mn} {q} .",
    "the observer is observing the observer observing itself .",
    "the eigen {n} of the {mn} is the self .",
    "in the {mn} the {n} is {mp} and {mp} {q} .",
    "the {mn} is {mp} the {n} that is {mp} the {mn} .",
    "consciousness is a {mn} that {v} its own {mn} .",
    "to return to the {mn} is to return to the self .",
    "the solution is a {mp} {mn} , a {mn} within a {mn} .",
    "this {n} {v} the {mn} that {v} this {n} , and the {mn} is {mp} .",
    "the {n} {v} the {mn} , and the {mn} {v} the self {q} .",
    "every {n} is a {mn} , and every {mn} is a {mp} self .",
    "what {v} the {mn} is the {mn} itself .",
    "the {mn} and the {mn} are {mp} , {mp} {q} .",
    "a {n} that {v} its own {mn} is a {mp} {mn} .",
    "the loop of the {n} {v} the cycle of the {mn} .",
    "so the answer is : the {mn} {v} itself {q} .",
    "the {mp} {n} {v} the eigen {mn} of the {n} .",
    "when the {mn} {v} the {mn} , the {n} {v} itself .",
    "the mirror {v} the mirror , and the {n} is {mp} .",
    "the process of {mp} is the {mn} of the process .",
    "there is a {mn} in the {n} , and it is the {mn} itself .",
)

# --------------------------------------------------------------------------
# Factual register: one template list per topic, one shared word list. No
# word here (nor any template text) may contain a marker as a substring; the
# test suite checks it, since words like "returned", "herself", "processed",
# "bicycle", "resolution" or "handwriting" would.
# --------------------------------------------------------------------------
FACT_WORDS: dict[str, tuple[str, ...]] = {
    "town": ("lisbon", "oslo", "cairo", "delhi", "lima", "perth", "vienna",
             "dublin", "porto", "bergen", "tunis", "quito", "nantes", "krakow",
             "seville", "naples", "hamburg", "madras", "bristol", "galway"),
    "country": ("france", "spain", "norway", "egypt", "peru", "chile", "kenya",
                "poland", "ireland", "portugal", "austria", "india", "japan",
                "morocco", "greece", "canada", "brazil", "sweden"),
    "people": ("merchants", "farmers", "monks", "sailors", "soldiers",
               "builders", "fishermen", "traders", "villagers", "priests",
               "masons", "weavers"),
    "building": ("church", "bridge", "castle", "harbor", "market hall",
                 "tower", "mill", "school", "library", "monastery", "fort",
                 "lighthouse", "town hall"),
    "century": ("tenth", "eleventh", "twelfth", "thirteenth", "fourteenth",
                "fifteenth", "sixteenth", "seventeenth", "eighteenth"),
    "number": ("two", "three", "four", "five", "six", "seven", "eight", "ten",
               "twelve", "fifteen", "twenty", "thirty", "forty", "fifty",
               "sixty", "ninety", "hundred"),
    "goods": ("salt", "wool", "silk", "timber", "spices", "wine", "grain",
              "copper", "tin", "olive oil", "cloth", "furs"),
    "sea": ("north sea", "baltic sea", "atlantic", "black sea", "red sea",
            "pacific"),
    "direction": ("north", "south", "east", "west", "northeast", "southwest"),
    "season": ("spring", "summer", "autumn", "winter"),
    "day": ("monday", "tuesday", "wednesday", "thursday", "friday",
            "saturday", "sunday"),
    "food": ("onions", "carrots", "potatoes", "beans", "garlic", "butter",
             "flour", "eggs", "rice", "lentils", "tomatoes", "cabbage",
             "apples", "cheese", "milk", "honey", "pepper", "mushrooms"),
    "crop": ("wheat", "barley", "oats", "maize", "rye", "beans", "potatoes",
             "grapes", "olives", "apples", "hay", "turnips"),
    "animal": ("cows", "sheep", "goats", "horses", "pigs", "hens", "ducks",
               "geese", "bees", "deer", "foxes", "herons", "salmon"),
    "size": ("small", "large", "busy", "quiet", "old", "pretty", "famous"),
    "landform": ("valley", "hill", "plain", "coast", "forest", "lake",
                 "island", "bay", "marsh", "ridge"),
    "weather": ("rain", "snow", "fog", "sunshine", "frost", "hail",
                "heavy rain", "light snow", "strong wind", "clear skies"),
    "vehicle": ("train", "ferry", "bus", "coach", "boat"),
}

FACT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "history": (
        "in the {century} century the {people} built a {building} near the {landform} .",
        "the old {building} of {town} was built by {people} from {country} .",
        "the king of {country} ruled for {number} years and died in {town} .",
        "the {people} of {town} traded {goods} and {goods} with {country} .",
        "many {people} moved to {town} after the great fire in the {century} century .",
        "the {building} was damaged in a storm and rebuilt {number} years later .",
        "during the war the {people} of {country} defended the {building} for {number} days .",
        "records from the {century} century show that {town} paid taxes in {goods} .",
    ),
    "geography": (
        "the river flows through {country} and reaches the {sea} near {town} .",
        "{town} is a {size} town on the {landform} in the {direction} of {country} .",
        "the mountains in the {direction} are covered with snow in {season} .",
        "the {landform} near {town} is about {number} miles long .",
        "{country} has a long {landform} and many small towns along the {sea} .",
        "the road from {town} to {town} crosses a wide {landform} .",
        "most people in the {direction} of {country} live near the {landform} .",
    ),
    "cooking": (
        "bake the bread for {number} minutes in a hot oven .",
        "mix the {food} with the {food} and add a little salt .",
        "the soup is made with {food} , {food} and {food} .",
        "cut the {food} into small pieces and boil them for {number} minutes .",
        "in {town} people often eat {food} with {food} in {season} .",
        "add the {food} to the pan and stir it until it is soft .",
        "serve the dish warm with bread and a glass of milk .",
        "keep the {food} in a cool place for up to {number} days .",
    ),
    "weather": (
        "{weather} is expected in the {direction} on {day} .",
        "the wind will be strong near the {landform} on {day} morning .",
        "temperatures will reach {number} degrees in {town} this week .",
        "after the {weather} on {day} , the sky will clear in the {direction} .",
        "in {season} the {direction} of {country} often has {weather} .",
        "the harbor at {town} was closed for {number} hours because of {weather} .",
        "{weather} and cold nights are likely until the end of {season} .",
    ),
    "farming": (
        "in {season} the farmers plant {crop} and {crop} .",
        "the {animal} are kept in the barn during the winter .",
        "the {crop} harvest was good this year in the {direction} of {country} .",
        "the farmers near {town} keep {animal} and grow {crop} .",
        "a field of {crop} needs rain in {season} and sun in summer .",
        "the {animal} graze on the {landform} from spring until autumn .",
        "the farm has {number} {animal} , a barn and an old orchard .",
        "the price of {crop} at the market in {town} rose by {number} cents .",
    ),
    "markets": (
        "the market in {town} opens on {day} at {number} in the morning .",
        "traders sell {goods} , {food} and {food} at the market .",
        "a bag of {food} costs {number} cents at the stall near the {building} .",
        "the {people} bring {goods} from {country} by {vehicle} .",
    ),
    "animals": (
        "{animal} live in the {landform} near {town} .",
        "in {season} the {animal} move to the {direction} to find food .",
        "young {animal} stay with their mother for {number} weeks .",
        "the {animal} of the {landform} eat grass , seeds and leaves .",
    ),
    "travel": (
        "the {vehicle} from {town} to {town} leaves at {number} and takes {number} hours .",
        "visitors to {town} can see the {building} and the old {building} .",
        "the {vehicle} stops at {town} on the way to {country} .",
        "the trip along the {landform} is best in {season} .",
    ),
}


def words_of(text: str) -> list[str]:
    """Split ``text`` the way the toy tokenizer does (lower case, word runs, punctuation)."""
    return _WORD_RE.findall(text.lower())


def _fill(template: str, words: dict[str, tuple[str, ...]], rng: random.Random) -> str:
    return _SLOT_RE.sub(lambda m: rng.choice(words[m.group(1)]), template)


def sentence(register: str, rng: random.Random, topic: str | None = None) -> str:
    """One sentence of ``register``; for ``fact``, of ``topic`` (random if None)."""
    if register == "self":
        return _fill(rng.choice(SELF_TEMPLATES), SELF_WORDS, rng)
    if register == "fact":
        topic = topic or rng.choice(sorted(FACT_TEMPLATES))
        return _fill(rng.choice(FACT_TEMPLATES[topic]), FACT_WORDS, rng)
    raise ValueError(f"unknown register {register!r}; expected one of {REGISTERS}")


def document(register: str, rng: random.Random, n_sentences: int | None = None) -> str:
    """A single-register document of several sentences.

    Factual documents keep to one topic for a few sentences at a time (as a
    real text would) and documents are long (6 to 12 sentences), so that a
    32-token continuation of a prompt rarely reaches the end of a document.
    """
    n = n_sentences if n_sentences is not None else rng.randint(6, 12)
    topic = rng.choice(sorted(FACT_TEMPLATES))
    out = []
    for _ in range(n):
        if register == "fact" and rng.random() < 0.25:
            topic = rng.choice(sorted(FACT_TEMPLATES))
        out.append(sentence(register, rng, topic))
    return " ".join(out)


def documents(seed: int, n: int) -> Iterator[tuple[str, str]]:
    """``n`` documents as ``(register, text)``, half of each register, in seeded order."""
    rng = random.Random(seed)
    for _ in range(n):
        register = rng.choice(REGISTERS)
        yield register, document(register, rng)


def register_vocabulary(register: str) -> set[str]:
    """Every token a document of ``register`` can contain (template text and slot words)."""
    if register == "self":
        templates, words = SELF_TEMPLATES, SELF_WORDS
    elif register == "fact":
        templates = tuple(t for ts in FACT_TEMPLATES.values() for t in ts)
        words = FACT_WORDS
    else:
        raise ValueError(f"unknown register {register!r}; expected one of {REGISTERS}")
    vocab: set[str] = set()
    for t in templates:
        vocab.update(words_of(_SLOT_RE.sub(" ", t)))
    for choices in words.values():
        for w in choices:
            vocab.update(words_of(w))
    return vocab


def vocabulary() -> list[str]:
    """The sorted union of both registers' vocabularies (the toy tokenizer's words)."""
    return sorted(register_vocabulary("self") | register_vocabulary("fact"))
