"""Container names: Docker's validation rule and generated adjective_surname names."""

from __future__ import annotations

import random
import re

from services.common.errors import InvalidArgument

_VALID = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

_ADJECTIVES = (
    "admiring", "adoring", "affectionate", "agitated", "amazing", "angry", "awesome",
    "beautiful", "blissful", "bold", "boring", "brave", "busy", "charming", "clever",
    "compassionate", "competent", "confident", "cool", "cranky", "crazy", "dazzling",
    "determined", "distracted", "dreamy", "eager", "ecstatic", "elastic", "elated",
    "elegant", "eloquent", "epic", "exciting", "fervent", "festive", "flamboyant",
    "focused", "friendly", "frosty", "funny", "gallant", "gifted", "goofy", "gracious",
    "great", "happy", "hardcore", "heuristic", "hopeful", "hungry", "infallible",
    "inspiring", "intelligent", "interesting", "jolly", "jovial", "keen", "kind",
    "laughing", "loving", "lucid", "magical", "modest", "musing", "naughty", "nervous",
    "nice", "nifty", "nostalgic", "objective", "optimistic", "peaceful", "pedantic",
    "pensive", "practical", "priceless", "quirky", "quizzical", "relaxed", "reverent",
    "romantic", "sad", "serene", "sharp", "silly", "sleepy", "stoic", "strange",
    "stupefied", "suspicious", "sweet", "tender", "thirsty", "trusting", "unruffled",
    "upbeat", "vibrant", "vigilant", "vigorous", "wizardly", "wonderful", "xenodochial",
    "youthful", "zealous", "zen",
)

_SURNAMES = (
    "agnesi", "albattani", "allen", "almeida", "archimedes", "ardinghelli", "aryabhata",
    "austin", "babbage", "banach", "bardeen", "bartik", "bassi", "bell", "benz",
    "bhabha", "bhaskara", "black", "blackwell", "bohr", "booth", "borg", "bose",
    "boyd", "brahmagupta", "brattain", "brown", "carson", "cerf", "chandrasekhar",
    "chaplygin", "chatelet", "clarke", "colden", "cori", "cray", "curie", "darwin",
    "davinci", "dijkstra", "dubinsky", "easley", "edison", "einstein", "elion",
    "engelbart", "euclid", "euler", "faraday", "feistel", "fermat", "fermi", "feynman",
    "franklin", "galileo", "gates", "goldberg", "goldstine", "goldwasser", "golick",
    "goodall", "hamilton", "haslett", "hawking", "heisenberg", "hermann", "hertz",
    "hodgkin", "hofstadter", "hopper", "hugle", "hypatia", "jackson", "jang", "jennings",
    "jepsen", "johnson", "joliot", "jones", "kalam", "kapitsa", "kare", "keldysh",
    "keller", "kepler", "khorana", "kilby", "kirch", "knuth", "kowalevski", "lalande",
    "lamarr", "lamport", "leakey", "leavitt", "lehmann", "lewin", "lichterman",
    "liskov", "lovelace", "lumiere", "mahavira", "margulis", "matsumoto", "maxwell",
    "mayer", "mccarthy", "mcclintock", "mclean", "mcnulty", "meitner", "mendel",
    "mendeleev", "minsky", "mirzakhani", "montalcini", "moore", "morse", "moser",
    "napier", "nash", "neumann", "newton", "nightingale", "nobel", "noether",
    "northcutt", "noyce", "panini", "pare", "pascal", "pasteur", "payne", "perlman",
    "pike", "poincare", "poitras", "ptolemy", "raman", "ramanujan", "ride", "ritchie",
    "roentgen", "rosalind", "saha", "sammet", "shamir", "shannon", "shaw", "shirley",
    "shockley", "sinoussi", "snyder", "spence", "stonebraker", "sutherland",
    "swanson", "swartz", "swirles", "taussig", "tesla", "thompson", "torvalds", "tu",
    "turing", "varahamihira", "vaughan", "villani", "visvesvaraya", "volhard",
    "wescoff", "wilbur", "wiles", "williams", "wilson", "wing", "wozniak", "wright",
    "wu", "yalow", "yonath", "zhukovsky",
)


def validate(name: str) -> str:
    """The name without its leading slash; 400 when Docker would refuse it."""
    if not _VALID.match(name):
        raise InvalidArgument(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name.removeprefix("/")


def generate(retry: int = 0) -> str:
    """A random adjective_surname name; a digit is appended after collisions."""
    name = f"{random.choice(_ADJECTIVES)}_{random.choice(_SURNAMES)}"
    return f"{name}{random.randint(0, 9)}" if retry else name
