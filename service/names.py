"""Study names people cannot confuse: one normal form, one key per look, one script per name.

Two names that a person reads as the same must not name two studies. The rule, in order:

1. A name is stored in Unicode NFKC form: composed and decomposed ``café`` are one name,
   full-width ``alice`` (U+FF41 ...) is ``alice``, ligatures and compatibility characters
   are folded.
2. Names are unique case-insensitively: the key that must be unique is the NFKC form
   case-folded (``Alice-Base`` and ``alice-base`` collide, and so do ``STRASSE`` and
   ``straße``).
3. A name's letters come from one script (Unicode TR39's "single script" restriction,
   with the Han/Hiragana/Katakana/Hangul mixes East Asian writing uses): ``alice`` spelt with a
   Cyrillic ``a`` (U+0430) among Latin letters is refused, since it is built to look like ``alice``.
   Digits, punctuation and symbols belong to every script.
"""

from __future__ import annotations

import unicodedata

# Scripts written together in one language; a name may mix the members of one group.
_COMBINABLE = (
    frozenset({"CJK", "HIRAGANA", "KATAKANA", "LATIN"}),
    frozenset({"CJK", "HANGUL", "LATIN"}),
)
_SCRIPT_WORDS = (
    "LATIN",
    "CYRILLIC",
    "GREEK",
    "ARMENIAN",
    "HEBREW",
    "ARABIC",
    "DEVANAGARI",
    "BENGALI",
    "THAI",
    "GEORGIAN",
    "HANGUL",
    "HIRAGANA",
    "KATAKANA",
    "CJK",
    "ETHIOPIC",
    "CHEROKEE",
    "TAMIL",
    "TELUGU",
    "KANNADA",
    "MALAYALAM",
    "GUJARATI",
    "GURMUKHI",
    "ORIYA",
    "SINHALA",
    "KHMER",
    "LAO",
    "TIBETAN",
    "MONGOLIAN",
    "COPTIC",
    "RUNIC",
    "OGHAM",
)


def normalize(name: str) -> str:
    """The stored form of a name: Unicode NFKC."""
    return unicodedata.normalize("NFKC", name)


def name_key(name: str) -> str:
    """What must be unique among study names: NFKC, case-folded, NFKC again.

    Case folding can leave a string that is not NFKC (``ǰ`` folds to ``ǰ``), hence the
    second normalisation, as Unicode's ``toNFKC_Casefold`` prescribes.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def _script(ch: str) -> str | None:
    """The script of a letter, read from its Unicode name; ``None`` for non-letters."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    words = unicodedata.name(ch, "").split()
    for word in words[:2]:
        if word in _SCRIPT_WORDS:
            return word
    return words[0] if words else "UNKNOWN"


def mixed_scripts(name: str) -> list[str]:
    """The scripts of a name's letters when they may not be mixed, else an empty list."""
    scripts = {s for s in map(_script, normalize(name)) if s is not None}
    if len(scripts) <= 1 or any(scripts <= group for group in _COMBINABLE):
        return []
    return sorted(scripts)
