"""The main job (``T2T_ViT_eval.sh``) as named steps: request -> resolve -> artefacts -> runners -> plan -> passes
-> report (docs/architecture.md). Imports every other layer; nothing imports it.
"""
