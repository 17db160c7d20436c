"""The one tokenizer: which words of a text carry meaning, and their crude stems.

Search (BM25 over passages), evidence lines, table choice, attachments and the run store's
"similar runs" all split text the same way, so a word that counts in one counts in all.
"""

from __future__ import annotations

import re

STOP_WORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could", "did", "do",
    "does", "for", "from", "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its",
    "me", "my", "of", "on", "or", "our", "should", "so", "than", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "to", "was", "we", "were", "what", "when", "where",
    "which", "who", "whom", "why", "will", "with", "would", "you", "your", "about", "any", "all",
    "also", "please", "tell", "show", "give", "find"
])
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> set[str]:
    """The words that carry meaning (no stop words, no single letters): `ram_gb` is ram, gb."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS and len(w) > 1}


def stem(word: str) -> str:
    """A crude stem, so "runs" matches "run" and "recommends" matches "recommendation"."""
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]  # "runs" is "run"
    return word[:5] if len(word) > 5 else word


def singular(word: str) -> str:
    """A word without its plural ending: "servers" and "server" meet, "contracts" and "controller" do not."""
    word = word.lower()
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word
