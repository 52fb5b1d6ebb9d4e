"""The jobs: command line, config and its validation, experiment wiring, the training and eval
loops, checkpoints and run logs. They use the library (the rest of ``score_sde``), which never
imports them."""
