"""Level 2 knowledge: folders indexed into passages that agents and grounding search.

Python does the finding so the model only does the reading. The pieces, one job each:
`bases` (knowledge-base names, the allowed roots), `walk` (the confined folder walk, every
skip with its reason), `readers` (a file's text as lines, with headings and pages),
`chunking` (overlapping passages that keep their headings and line numbers), `embedding`
(the shipped ONNX model), `store` (the `KnowledgeStore` interface and its SQLite +
sqlite-vec + FTS5 implementation), `ingest` (incremental indexing under a lock), `search`
(vector, BM25 and their fusion), `service` (the app's one index: what callers share) and
`tool` (the `search_knowledge` tool's guard).
"""
