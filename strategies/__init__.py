"""Server-side aggregation for fedglobal: pure maths, Flower strategies, a registry.

- :mod:`strategies.aggregate`: streaming, checked averages of named arrays.
- :mod:`strategies.robust`: robust rules (median, trimmed mean, Krum, Bulyan).
- :mod:`strategies.server_opt`: server optimizers (momentum, Adagrad, Adam, Yogi).
- :class:`FedAvg` (McMahan et al. 2017), :class:`FedProx` (Li et al. 2020).
- :class:`FedAvgM` (Hsu et al. 2019); :class:`FedAdagrad`, :class:`FedAdam`,
  :class:`FedYogi` (Reddi et al. 2021).
- :class:`FedMedian`, :class:`FedTrimmedAvg` (Yin et al. 2018); :class:`Krum`,
  :class:`MultiKrum` (Blanchard et al. 2017); :class:`Bulyan` (El Mhamdi et al. 2018).
- :class:`Layerwise` (per-layer rules, intervals as in FedLAMA, Lee et al. 2023,
  per-layer weighting criteria), :class:`FedPer` (Arivazhagan et al. 2019),
  :class:`FedBN` (Li et al. 2021).
- :class:`QFFL` (q-FFL, Li et al. 2020): fair aggregation, regions with a higher
  loss weigh more; :class:`FedNova` (Wang et al. 2020): normalised averaging
  under unequal local steps; :class:`Scaffold` (Karimireddy et al. 2020):
  control variates against client drift; :class:`Ditto` (Li et al. 2021):
  personal models, evaluated personalised.
- :class:`DPFedAvg` (McMahan et al. 2018): clipping, Gaussian noise, RDP accountant.
- :mod:`strategies.asynchronous`: FedBuff (Nguyen et al. 2022) and FedAsync (Xie
  et al. 2019), maths in :mod:`strategies.staleness`; :mod:`strategies.hierfavg`:
  HierFAVG (Liu et al. 2020). Found by name (``fedbuff``, ``fedasync``, ``hierfavg``).
- :func:`get` / :func:`register` / :func:`available`: strategies by name.

Every strategy subclasses :class:`FedAvg` and has ``get_config()``,
``state_dict()`` and ``load_state_dict()``.
"""

from . import aggregate, errors, robust, server_opt
from .byzantine import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from .ditto import Ditto
from .dp import CLIPPING_NORM_KEY, DPFedAvg
from .fedavg import LOCAL_STEPS_KEY, FedAvg
from .fednova import FedNova
from .fedopt import FedAdagrad, FedAdam, FedAvgM, FedYogi
from .fedprox import PROXIMAL_MU_KEY, FedProx
from .layer_rules import LayerRule
from .layerwise import LOCAL_LAYERS_KEY, FedBN, FedPer, Layerwise
from .qffl import QFFL
from .registry import available, get, register
from .scaffold import Scaffold

__all__ = [
    "CLIPPING_NORM_KEY",
    "LOCAL_LAYERS_KEY",
    "LOCAL_STEPS_KEY",
    "PROXIMAL_MU_KEY",
    "QFFL",
    "Bulyan",
    "DPFedAvg",
    "Ditto",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedBN",
    "FedMedian",
    "FedNova",
    "FedPer",
    "FedProx",
    "FedTrimmedAvg",
    "FedYogi",
    "Krum",
    "LayerRule",
    "Layerwise",
    "MultiKrum",
    "Scaffold",
    "aggregate",
    "available",
    "errors",
    "get",
    "register",
    "robust",
    "server_opt",
]
