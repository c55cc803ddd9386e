"""IFEval's instruction verifiers, one module per family of instruction ids (each registers its verifiers in
`skills_cli.evaluation.graders.ifeval.verifiers.VERIFIERS`)."""
