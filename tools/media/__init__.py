"""Level 4: files that are not plain text, in and out.

In: PDFs as text with page numbers (`pdf`), images read by OCR when the model cannot see
(`ocr`), audio transcribed offline (`transcribe`). Out: speech to a wav (`speech`) and
charts drawn by matplotlib inside the code sandbox (`charts`), kept in the workspace and
shown on the flow run as Prefect artifacts (`artifacts`). What is too big, too long,
damaged or of an unknown kind is refused by `limits` before any of them reads it.

Like every tool, these know nothing of flows, plans or models; `foreman.engine.attachments`
turns attached files into what a task gets.
"""
