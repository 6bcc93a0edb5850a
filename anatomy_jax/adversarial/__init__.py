"""Adversarial examples (FGSM, PGD under L-inf and L2) and transfer matrices between models."""

from anatomy_jax.adversarial.attacks import NORMS, attack_dataset, attack_success, fgsm, make_attack, pgd
from anatomy_jax.adversarial.transfer import transfer_matrix

__all__ = ["NORMS", "attack_dataset", "attack_success", "fgsm", "make_attack", "pgd", "transfer_matrix"]
