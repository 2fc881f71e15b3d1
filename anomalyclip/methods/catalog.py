"""The methods of the paper's tables by name: what each is and needs. Light (no torch), for the command line."""

from __future__ import annotations

from dataclasses import dataclass

from anomalyclip.errors import ConfigError

PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
"""`fp32` as the authors ran (the default, used by conformance and the paper profile); `bf16` autocast, fast."""


@dataclass(frozen=True)
class MethodInfo:
    """One column of the paper's Tables 1-2."""

    title: str
    learns: bool
    few_shot: bool
    reference: str


METHODS: dict[str, MethodInfo] = {
    "clip": MethodInfo("CLIP", False, False, "plain CLIP with two prompts (official AnomalyCLIP issue #25)"),
    "clip_ac": MethodInfo("CLIP-AC", False, False, "plain CLIP with the state x template prompt ensemble"),
    "winclip": MethodInfo("WinCLIP", False, True, "anomalib 2.7.0 WinClipModel"),
    "vand": MethodInfo("VAND", True, True, "APRIL-GAN, ByChelsea/VAND-APRIL-GAN @ f13b8a6"),
    "coop": MethodInfo("CoOp", True, False, "learned context before state word and class name (paper rebuttal)"),
    "anomalyclip": MethodInfo("AnomalyCLIP", True, False, "zqhang/AnomalyCLIP @ 45ed4dd"),
}
"""Method name -> description, in the order of the paper's tables."""
LEARNED_PROMPTS = ("anomalyclip", "coop")
"""The methods that learn prompts on AnomalyCLIP's model, configured by its settings (`AnomalyCLIPConfig`)."""


def check_method(method: str) -> str:
    """`method` if known, else a ConfigError naming the choices."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    return method
