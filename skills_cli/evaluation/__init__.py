"""Evaluation programs that run in jobs: benchmark data (prepare_data), grading with the benchmark's grader
(grade, graders/), the LLM judge (judge), metrics (pass@k, majority@k) and the summary (summarize)."""
