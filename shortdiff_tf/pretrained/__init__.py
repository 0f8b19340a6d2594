"""Pretrained score models from other codebases, read from the user's files (nothing is downloaded).

``torch_file``: PyTorch ``.pth`` checkpoints without PyTorch; ``scoresde``: ScoreSDE's
(score_sde_pytorch) configs as data and its NCSN++/DDPM module order; ``diffusers_unet``: a
diffusers ``UNet2DModel`` folder; ``mapping``: weights onto our Keras network by name and shape.
The run-level entry point is ``app.import_run``.
"""
