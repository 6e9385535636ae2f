"""Sparse coding (Olshausen & Field 1996): 128 unit-norm atoms for 8x8 patches of mnist5k.

Launch:
  python -m experiments.train --config=configs/sparse_coding.py --workdir=runs/sparse_coding
Variants (`--config=configs/sparse_coding.py:VARIANT`; several joined by commas):
  tiny  digits8x8, 4x4 patches, 32 atoms, 20 steps: seconds on a laptop core
Other solvers and penalties: `--config.model_config.inference=ista`,
`--config.model_config.penalty=0.3`.

The digits are plain [0, 1] intensities (no binarization, no dequantization noise): patches
of the images themselves, each with its mean removed (`subtract_mean`). Codes are FISTA's
after 100 iterations in training and 300 in evaluation; the dictionary follows Adam (rate
1e-2, cosine decay), projected back onto unit-norm atoms after every step.

eval.json holds the test patches' reconstruction MSE per pixel and fraction of nonzero codes
at `penalty`, and `sparsity_curve`, both over `eval_penalties` on the trained dictionary; the
run writes filters.png (the atoms), sparsity_curve.png and reconstructions.png.

Measured (seed 0, 2 shared CPU cores, the launch command above): 1,000 steps, 141 s of
training, 3.5 min in all; on 16,000 test patches at penalty 0.1, MSE 0.0029 per pixel (2.7% of
the mean-removed patches' energy) with 11.9% of the codes nonzero (15 of 128 atoms); PCA keeping
15 components of test patches drawn the same way leaves 0.0127. The whole curve:
docs/classic-models.md.
"""

import ml_collections

from configs import common


def sparse_coding_model_config() -> ml_collections.ConfigDict:
    """8x8 patches, 128 atoms (2x overcomplete), penalty 0.1, FISTA with 100 iterations (300 in
    evaluation)."""
    return ml_collections.ConfigDict(
        dict(
            patch_size=8,
            num_atoms=128,
            penalty=0.1,
            inference="fista",
            inference_iterations=100,
            eval_inference_iterations=300,
            patches_per_image=10,
            subtract_mean=True,
            eval_patches_per_image=16,
            eval_penalties=(0.01, 0.03, 0.1, 0.3, 1.0),
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.binarized_mnist5k(
        "sparse_coding",
        sparse_coding_model_config(),
        num_steps=1_000,
        learning_rate=1e-2,
        log_every=100,
        eval_every=500,
        checkpoint_every=500,
        sample_every=0,
    )
    config.preprocess.binarize = "none"  # the [0, 1] intensities themselves
    common.apply_variants(config, arg, VARIANTS)
    return config


def _tiny(config: ml_collections.ConfigDict) -> None:
    common.apply_tiny(config)
    mc = config.model_config
    mc.patch_size, mc.num_atoms = 4, 32
    mc.inference_iterations, mc.eval_inference_iterations = 20, 20
    mc.patches_per_image, mc.eval_patches_per_image = 4, 4
    mc.eval_penalties = (0.03, 0.3)


VARIANTS = {"tiny": _tiny}
