"""Level 5 memory: conversation threads (short-term) and per-user facts (long-term).

Everything is kept per user in one SQLite file under the app home (`store`); the tools
(`tools`) take no user id: the user comes from the run (`scope.MemoryScope`), so no prompt
can reach another user's memory.
"""
