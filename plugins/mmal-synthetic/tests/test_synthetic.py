"""Tests of the mmal-synthetic generators: stated properties, determinism, shapes, validation."""

import torch

torch.set_num_threads(1)

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import mmal_core  # noqa: E402
from mmal_core import MmalError, MultimodalDataset  # noqa: E402
from mmal_synthetic import SyntheticDifficulty, SyntheticInteraction, SyntheticMissing, sample_types  # noqa: E402
from mmal_core.testing import parametrize_with_checks  # noqa: E402
from mmal_synthetic.missing import class_rates  # noqa: E402

CLASSES = [SyntheticDifficulty, SyntheticInteraction, SyntheticMissing]
SMALL = dict(n_train=300, n_test=100)


# -- probes ---------------------------------------------------------------------------------
def _x(split, mods):
    return np.concatenate([split.features[m] for m in mods], axis=1)


def _standardise(xtr, xte):
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    return (xtr - mean) / std, (xte - mean) / std


def linear_probe(ds, mods):
    """Test accuracy of a logistic regression trained on the whole pool."""
    xtr, xte = _standardise(_x(ds.train, mods), _x(ds.test, mods))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(max_iter=500).fit(xtr, ds.train.labels)
    return clf.score(xte, ds.test.labels)


def mlp_probe(ds, mods, hidden=64, steps=300, seed=0):
    """Test accuracy of a one-hidden-layer MLP trained full-batch with Adam on the pool."""
    xtr, xte = _standardise(_x(ds.train, mods), _x(ds.test, mods))
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(xtr.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, ds.n_classes)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    x, y = torch.from_numpy(xtr), torch.from_numpy(ds.train.labels)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    with torch.no_grad():
        pred = net(torch.from_numpy(xte)).argmax(1).numpy()
    return float((pred == ds.test.labels).mean())


def quantised_probe(ds, mods, n_clusters):
    """Cluster each modality (k-means, no labels), then predict the majority training label
    of the tuple of cluster indices: a reliable probe of any function of the cluster ids."""
    keys_tr, keys_te = np.zeros(ds.train.n, np.int64), np.zeros(ds.test.n, np.int64)
    for m in mods:
        km = KMeans(n_clusters, n_init=4, random_state=0).fit(ds.train.features[m])
        keys_tr = keys_tr * n_clusters + km.labels_
        keys_te = keys_te * n_clusters + km.predict(ds.test.features[m])
    c = ds.n_classes
    counts = np.zeros((n_clusters ** len(mods), c))
    np.add.at(counts, (keys_tr, ds.train.labels), 1)
    return float((counts.argmax(1)[keys_te] == ds.test.labels).mean())


# -- registration, structure, determinism --------------------------------------------------
@parametrize_with_checks([(cls, SMALL, {"every_class": True}) for cls in CLASSES])
def test_conformance(check):
    check()


@pytest.mark.parametrize("cls", CLASSES)
def test_load_dataset_through_plugin(cls):
    ds = mmal_core.load_dataset(cls.name, seed=3, **SMALL)
    assert isinstance(ds, MultimodalDataset)
    assert ds.name == cls.name and ds.modality_names == ["m0", "m1"] and ds.n_classes == 4
    assert np.array_equal(ds.train.ids, np.arange(300)) and np.array_equal(ds.test.ids, np.arange(300, 400))
    for split in (ds.train, ds.test):
        assert all(x.dtype == np.float32 and x.shape == (split.n, 16) for x in split.features.values())
        assert split.difficulty is not None and split.difficulty.min() >= 0 and split.difficulty.max() <= 1
        assert np.bincount(split.labels, minlength=4).min() >= split.n // 4  # balanced classes
    assert ds.info["generator_version"] and ds.info["seed"] == 3
    assert ds.info["params"]["n_train"] == 300 and "n_modalities" in ds.info["resolved_params"]
    entry = mmal_core.get_plugin_manager().entry("dataset", cls.name)
    assert entry.dist == "mmal-synthetic"


@pytest.mark.parametrize("cls", CLASSES)
def test_same_seed_same_arrays_other_seed_other_arrays(cls):
    a, b, c = cls(**SMALL).load(7), cls(**SMALL).load(7), cls(**SMALL).load(8)
    for split in ("train", "test"):
        sa, sb, sc = getattr(a, split), getattr(b, split), getattr(c, split)
        assert sa.fingerprint() == sb.fingerprint()
        assert np.array_equal(sa.difficulty, sb.difficulty)
        assert sa.fingerprint() != sc.fingerprint()
        assert not np.array_equal(sa.features["m0"], sc.features["m0"])


@pytest.mark.parametrize("cls", CLASSES)
def test_parameters_stored_unchanged(cls):
    obj = cls(n_train=120, dim=[3, 5], modality_names=["img", "txt"])
    assert obj.n_train == 120 and obj.dim == [3, 5] and obj.modality_names == ["img", "txt"]
    assert obj.get_params()["dim"] == [3, 5]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("n_modalities,dim,n_classes", [(3, [2, 7, 5], 3), (5, 4, 2), (2, [1, 33], 6)])
def test_any_number_of_modalities_and_dims(cls, n_modalities, dim, n_classes):
    ds = mmal_core.load_dataset(
        cls.name, seed=1, n_train=97, n_test=41, n_classes=n_classes, n_modalities=n_modalities, dim=dim
    )
    dims = dim if isinstance(dim, list) else [dim] * n_modalities
    assert ds.modality_names == [f"m{j}" for j in range(n_modalities)]
    assert [s.dim for s in ds.modalities] == dims
    assert ds.train.n == 97 and ds.test.n == 41 and ds.train.mask.shape == (97, n_modalities)
    assert ds.train.labels.max() < n_classes
    assert np.array_equal(ds.test.ids, np.arange(97, 138))


def test_custom_modality_names():
    ds = SyntheticInteraction(**SMALL, n_modalities=3, modality_names=["a", "b", "c"]).load(0)
    assert ds.modality_names == ["a", "b", "c"] and list(ds.train.features) == ["a", "b", "c"]


# -- parameter validation -------------------------------------------------------------------
BAD = [
    (SyntheticDifficulty, dict(n_modalities=1), "n_modalities"),
    (SyntheticDifficulty, dict(n_classes=1), "n_classes"),
    (SyntheticDifficulty, dict(n_train=0), "n_train"),
    (SyntheticDifficulty, dict(n_test=2.5), "n_test"),
    (SyntheticDifficulty, dict(dim=0), "dim"),
    (SyntheticDifficulty, dict(dim=[4, 4, 4]), "dim"),
    (SyntheticDifficulty, dict(snr=[4.0, -1.0]), "snr"),
    (SyntheticDifficulty, dict(snr=[4.0]), "snr"),
    (SyntheticDifficulty, dict(mapping="quadratic"), "mapping"),
    (SyntheticDifficulty, dict(mapping=["linear", "cubic"]), "mapping"),
    (SyntheticDifficulty, dict(clusters_per_class=0), "clusters_per_class"),
    (SyntheticDifficulty, dict(separation=0), "separation"),
    (SyntheticDifficulty, dict(latent_dim=0), "latent_dim"),
    (SyntheticDifficulty, dict(modality_names=["a", "a"]), "modality_names"),
    (SyntheticDifficulty, dict(modality_names=["a"]), "modality_names"),
    (SyntheticInteraction, dict(interaction="xor"), "interaction"),
    (SyntheticInteraction, dict(mixture={"redundant": -1.0, "unique": 1.0}), "mixture"),
    (SyntheticInteraction, dict(mixture={"shared": 1.0}), "mixture"),
    (SyntheticInteraction, dict(mixture=[0, 0, 0]), "mixture"),
    (SyntheticInteraction, dict(mixture=[1, 2]), "mixture"),
    (SyntheticInteraction, dict(mixture="half"), "mixture"),
    (SyntheticInteraction, dict(unique_modality=2), "unique_modality"),
    (SyntheticInteraction, dict(noise=-0.1), "noise"),
    (SyntheticMissing, dict(missing_rate=[0.0, 1.5]), "missing_rate"),
    (SyntheticMissing, dict(missing_rate=-0.1), "missing_rate"),
    (SyntheticMissing, dict(missing_rate=[0.1, 0.2, 0.3]), "missing_rate"),
    (SyntheticMissing, dict(mechanism="mnar"), "mechanism"),
    (SyntheticMissing, dict(apply_to="train"), "apply_to"),
    (SyntheticMissing, dict(noise=float("nan")), "noise"),
]


@pytest.mark.parametrize("cls,params,word", BAD, ids=[f"{c.__name__}-{w}-{i}" for i, (c, _, w) in enumerate(BAD)])
def test_bad_parameters_raise_one_line_error_naming_the_parameter(cls, params, word):
    with pytest.raises(MmalError) as err:
        cls(**params)
    assert f"'{word}" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(MmalError, match=word):
        mmal_core.load_dataset(cls.name, seed=0, **params)


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_seed_and_unknown_parameter(cls):
    with pytest.raises(MmalError, match="seed"):
        cls(**SMALL).load(-1)
    with pytest.raises(MmalError, match="n_trian"):
        mmal_core.load_dataset(cls.name, seed=0, n_trian=10)


# -- synthetic-difficulty -----------------------------------------------------------------------
def test_difficulty_easy_modality_beats_hard_modality():
    ds = SyntheticDifficulty(n_train=1500, n_test=600, mapping="linear").load(0)
    easy, hard = linear_probe(ds, ["m0"]), linear_probe(ds, ["m1"])
    assert easy > 0.9 and easy > hard + 0.1 and hard > 0.25 + 0.1
    both = linear_probe(ds, ["m0", "m1"])
    assert both > 0.9
    # difficulty is latent ambiguity: misclassified samples are the ambiguous ones
    xtr, xte = _standardise(_x(ds.train, ["m0"]), _x(ds.test, ["m0"]))
    wrong = LogisticRegression(max_iter=500).fit(xtr, ds.train.labels).predict(xte) != ds.test.labels
    assert ds.test.difficulty[wrong].mean() > 3 * ds.test.difficulty[~wrong].mean()


def test_difficulty_nonlinear_modality_needs_a_nonlinear_probe():
    ds = SyntheticDifficulty(n_train=2000, n_test=800, snr=[4.0, 4.0]).load(0)
    assert ds.info["resolved_params"]["mapping"] == ["linear", "nonlinear"]
    lin_m0, lin_m1, mlp_m1 = linear_probe(ds, ["m0"]), linear_probe(ds, ["m1"]), mlp_probe(ds, ["m1"])
    assert mlp_m1 > lin_m1 + 0.08
    assert lin_m0 > lin_m1 + 0.2


def test_difficulty_defaults():
    obj = SyntheticDifficulty(n_modalities=3)
    assert obj.snr is None and obj.mapping is None
    cfg = obj.load(0).info["resolved_params"]
    assert cfg["snr"] == pytest.approx([4.0, np.sqrt(2.0), 0.5])
    assert cfg["mapping"] == ["linear", "nonlinear", "nonlinear"]
    assert SyntheticDifficulty().load(0).info["resolved_params"]["snr"] == pytest.approx([4.0, 0.5])


# -- synthetic-interaction --------------------------------------------------------------------
def test_interaction_synergy_needs_all_modalities():
    ds = SyntheticInteraction(interaction="synergy", n_train=2000, n_test=600).load(0)
    assert np.all(ds.train.difficulty == 1.0)
    chance = 1 / ds.n_classes
    for m in ("m0", "m1"):
        assert linear_probe(ds, [m]) < chance + 0.1
        assert quantised_probe(ds, [m], 4) < chance + 0.1
    assert linear_probe(ds, ["m0", "m1"]) < chance + 0.1
    assert quantised_probe(ds, ["m0", "m1"], 4) > 0.8


def test_interaction_synergy_three_modalities_is_xor_of_all():
    ds = SyntheticInteraction(interaction="synergy", n_classes=2, n_modalities=3, n_train=2000, n_test=600).load(1)
    for pair in (["m0", "m1"], ["m1", "m2"], ["m0", "m2"]):
        assert quantised_probe(ds, pair, 2) < 0.5 + 0.1
    assert quantised_probe(ds, ["m0", "m1", "m2"], 2) > 0.8


@pytest.mark.slow
def test_interaction_synergy_three_modalities_is_learnable_jointly():
    # four classes, three modalities: 64 combinations of group indices. An MLP on all three
    # learns the label; on any pair it stays at chance (the pair is independent of the label).
    ds = SyntheticInteraction(interaction="synergy", n_modalities=3).load(0)
    chance = 1 / ds.n_classes
    assert mlp_probe(ds, ["m0", "m1", "m2"], hidden=128) > 0.75  # 0.88 (0.33 with the old spread)
    for pair in (["m0", "m1"], ["m1", "m2"], ["m0", "m2"]):
        assert mlp_probe(ds, pair, hidden=128) < chance + 0.06  # 0.22-0.25


def test_interaction_synergy_two_modalities_unchanged():
    # the tighter synergy groups apply from three modalities on: two-modality data (and so the
    # canonical benchmarks, whose hash does not include the generator version) is as before
    before = {  # generator version 1, seed 0: train m0 [:2, :2], test m1 [-1, :2]
        "synergy": ([-1.292325, -0.866592, 0.135729, -1.080596], [-1.131334, -1.467422]),
        "mixture": ([-0.544791, -0.616781, 0.277317, -1.814998], [0.517952, -0.365306]),
    }
    for interaction, (train, test) in before.items():
        ds = SyntheticInteraction(interaction=interaction, n_train=200, n_test=50).load(0)
        assert ds.train.features["m0"][:2, :2].ravel().tolist() == pytest.approx(train, abs=1e-5)
        assert ds.test.features["m1"][-1, :2].tolist() == pytest.approx(test, abs=1e-5)


def test_interaction_unique_only_one_modality_informs():
    ds = SyntheticInteraction(interaction="unique", unique_modality=1, n_train=1500, n_test=600).load(0)
    chance = 1 / ds.n_classes
    alone = linear_probe(ds, ["m1"])
    assert alone > 0.85
    assert linear_probe(ds, ["m0"]) < chance + 0.1
    assert quantised_probe(ds, ["m0"], 4) < chance + 0.1
    assert abs(linear_probe(ds, ["m0", "m1"]) - alone) < 0.05


def test_interaction_redundant_every_modality_informs():
    ds = SyntheticInteraction(interaction="redundant", n_modalities=3, n_train=1000, n_test=500).load(0)
    alone = [linear_probe(ds, [m]) for m in ds.modality_names]
    assert min(alone) > 0.85
    assert linear_probe(ds, ds.modality_names) >= np.mean(alone) - 0.02


def test_interaction_mixture_records_types():
    ds = SyntheticInteraction(n_train=3000, n_test=600, mixture={"redundant": 2, "synergy": 2}).load(0)
    info = ds.info
    assert info["resolved_params"]["mixture"] == {"redundant": 0.5, "unique": 0.0, "synergy": 0.5}
    types = sample_types(ds.train)
    assert set(types) == {"redundant", "synergy"}
    assert abs((types == "synergy").mean() - 0.5) < 0.05
    assert info["type_fractions"]["train"]["synergy"] == pytest.approx((types == "synergy").mean())
    # on the synergy samples a single modality is at chance, on the redundant ones it is not
    xtr, xte = _standardise(_x(ds.train, ["m0"]), _x(ds.test, ["m0"]))
    pred = LogisticRegression(max_iter=500).fit(xtr, ds.train.labels).predict(xte) == ds.test.labels
    test_types = sample_types(ds.test)
    assert pred[test_types == "synergy"].mean() < 0.25 + 0.1
    assert pred[test_types == "redundant"].mean() > 0.85
    # list form, normalised
    default = SyntheticInteraction(**SMALL, mixture=[1, 1, 2]).load(0)
    assert default.info["resolved_params"]["mixture"] == {"redundant": 0.25, "unique": 0.25, "synergy": 0.5}


# -- synthetic-missing -----------------------------------------------------------------------------
@pytest.mark.parametrize("apply_to", ["pool", "test", "both"])
def test_missing_rates_match_request(apply_to):
    ds = SyntheticMissing(n_train=4000, n_test=4000, n_modalities=3, missing_rate=[0.0, 0.5, 0.2], apply_to=apply_to).load(2)
    requested = np.array([0.0, 0.5, 0.2])
    for name, split in (("pool", ds.train), ("test", ds.test)):
        rate = 1.0 - split.mask.mean(axis=0)
        if apply_to in (name, "both"):
            assert np.abs(rate - requested).max() < 0.03
        else:
            assert rate.max() == 0.0
        assert split.mask.any(axis=1).all()
        for j, m in enumerate(ds.modality_names):
            assert not split.features[m][~split.mask[:, j]].any()  # missing features are 0


def test_missing_class_mechanism_depends_on_class():
    ds = SyntheticMissing(n_train=4000, n_test=400, mechanism="class").load(0)
    y, present = ds.train.labels, ds.train.mask[:, 1]
    per_class = np.array([1.0 - present[y == c].mean() for c in range(4)])
    expected = class_rates([0.0, 0.5], 4, "class")[:, 1]
    assert np.allclose(expected, [0.0, 1 / 3, 2 / 3, 1.0])
    assert np.abs(per_class - expected).max() < 0.05
    assert abs((1.0 - present.mean()) - 0.5) < 0.03  # the mean rate is preserved
    assert ds.train.mask[:, 0].all()
    # the MCAR mechanism does not depend on the class
    mcar = SyntheticMissing(n_train=4000, n_test=400).load(0)
    p = mcar.train.mask[:, 1]
    assert np.ptp([1.0 - p[mcar.train.labels == c].mean() for c in range(4)]) < 0.08


def test_missing_never_drops_every_modality():
    ds = SyntheticMissing(n_train=2000, n_test=300, n_modalities=3, missing_rate=0.9).load(0)
    assert ds.train.mask.any(axis=1).all() and ds.test.mask.any(axis=1).all()
    every = SyntheticMissing(**SMALL, missing_rate=1.0).load(0)
    assert (every.train.mask.sum(axis=1) == 1).all()
    with pytest.raises(MmalError, match="missing_rate"):
        SyntheticMissing(**SMALL, missing_rate=[0.0, 1.0]).load(0)


def test_missing_modalities_stay_informative():
    ds = SyntheticMissing(n_train=1500, n_test=600, missing_rate=0.0).load(0)
    m0, m1, both = linear_probe(ds, ["m0"]), linear_probe(ds, ["m1"]), linear_probe(ds, ["m0", "m1"])
    assert min(m0, m1) > 0.8 and both > max(m0, m1) + 0.01
