"""`config.model_config` checks the families share.

Each raises ValueError naming the field, its value and what is allowed; `genjax.train.config`
turns it into a ConfigError before anything is written.
"""

from __future__ import annotations


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_choice(mc, field: str, allowed: tuple) -> None:
    """`config.model_config.<field>` is one of `allowed`."""
    if mc[field] not in allowed:
        raise ValueError(f"config.model_config.{field}={mc[field]!r}; allowed: {allowed}")


def check_choices(mc, fields_allowed: dict[str, tuple]) -> None:
    """`check_choice` for each `field: allowed` pair."""
    for field, allowed in fields_allowed.items():
        check_choice(mc, field, allowed)


def check_positive_ints(mc, fields) -> None:
    """Each `config.model_config.<field>` is a positive integer."""
    for field in fields:
        if not _is_positive_int(mc[field]):
            raise ValueError(
                f"config.model_config.{field}={mc[field]!r} must be a positive integer."
            )


def check_non_negative_numbers(mc, fields) -> None:
    """Each `config.model_config.<field>` is a number >= 0 (0 typically disables a term)."""
    for field in fields:
        value = mc[field]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ValueError(
                f"config.model_config.{field}={value!r} must be a non-negative number "
                "(0 disables it)."
            )


def check_bools(mc, fields) -> None:
    """Each `config.model_config.<field>` is True or False."""
    for field in fields:
        if not isinstance(mc[field], bool):
            raise ValueError(f"config.model_config.{field}={mc[field]!r}; allowed: (True, False)")


def check_sizes(
    mc, field: str, num: int | None = None, meaning: str = "", allow_empty: bool = False
) -> tuple[int, ...]:
    """`config.model_config.<field>` is a tuple of positive integers, non-empty unless
    `allow_empty`, of length `num` when given; returns it as a tuple. `meaning` ends the
    error, e.g. 'one per RBM'."""
    sizes = mc[field]
    if (
        not isinstance(sizes, tuple | list)
        or (not sizes and not allow_empty)
        or (num is not None and len(sizes) != num)
        or not all(_is_positive_int(size) for size in sizes)
    ):
        if num is not None:
            count = f"a tuple of {num}"
        else:
            count = "a tuple of" if allow_empty else "a non-empty tuple of"
        suffix = f", {meaning}" if meaning else ""
        raise ValueError(
            f"config.model_config.{field}={sizes!r} must be {count} positive integers{suffix}."
        )
    return tuple(sizes)


def require_binary(spec, setting: str, alternative: str = "") -> None:
    """Data described by `spec` is binarized; else an error saying how to binarize it.

    Args:
      spec: the run's `DataSpec`.
      setting: what needs binary data, e.g. "config.model='nade'".
      alternative: another way out, e.g. "likelihood='gaussian'".
    """
    if spec.binarized:
        return
    other = f", or use {alternative}" if alternative else ""
    raise ValueError(
        f"{setting} needs binary data: set config.preprocess.binarize to 'dynamic' or 'fixed'"
        f"{other} (config.dataset={spec.name!r} is not binarized)."
    )


# The importance-sampling fields that change only evaluation (a family's `evaluation_fields`).
IMPORTANCE_SAMPLING_EVALUATION_FIELDS = (
    "eval_importance_samples",
    "eval_chunk_size",
    "monitor_importance_samples",
)


def check_importance_sampling(mc) -> None:
    """The importance-sampling fields of a latent-variable family (VAE, Helmholtz machine):
    `num_importance_samples` (K in training), `eval_importance_samples` (K of the final test
    estimate), computed in chunks of `eval_chunk_size` that divide it, and
    `monitor_importance_samples` (K of the monitoring estimate), all positive integers."""
    check_positive_ints(
        mc,
        (
            "num_importance_samples",
            "eval_importance_samples",
            "eval_chunk_size",
            "monitor_importance_samples",
        ),
    )
    if mc.eval_importance_samples % mc.eval_chunk_size:
        raise ValueError(
            f"config.model_config.eval_importance_samples={mc.eval_importance_samples} must "
            f"be a multiple of config.model_config.eval_chunk_size={mc.eval_chunk_size}."
        )
