"""Names flow from where they are known into every Explanation, its plot, its HTML and its file
(issue 18): DataFrame columns, an estimator's ``feature_names_in_`` / ``classes_``, the zoo's
modules, ``uv.Model(feature_names=, class_names=)`` and names given to a call or a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import unveil as uv  # noqa: E402

pd = pytest.importorskip("pandas")
sklearn_ensemble = pytest.importorskip("sklearn.ensemble")


@pytest.fixture(scope="module")
def wine() -> tuple[Any, Any, Any]:
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    df, labels = bunch.data, np.asarray(bunch.target_names)[bunch.target]
    gbc = sklearn_ensemble.GradientBoostingClassifier(n_estimators=8, max_depth=2, random_state=0)
    return gbc.fit(df, labels), df, labels


def plot_texts(exp: uv.Explanation, **kwargs: Any) -> str:
    ax = exp.plot(0, **kwargs)
    try:
        found = [t.get_text() for t in ax.texts] + [t.get_text() for t in ax.get_yticklabels()]
        return " | ".join([ax.get_title(), *found])
    finally:
        plt.close(ax.figure)


def test_dataframe_columns_and_estimator_classes_reach_plot_html_and_file(wine, tmp_path: Path) -> None:
    gbc, df, _ = wine
    exp = uv.explain(gbc, df.iloc[:3], method="kernel_shap", background=df.iloc[:40],
                     n_samples=128, seed=0)
    assert exp.feature_names == list(df.columns)
    assert exp.class_names == ["class_0", "class_1", "class_2"]  # the estimator's classes_
    top = df.columns[int(np.argmax(np.abs(exp.values[0])))]
    assert np.abs(exp.values[0]).max() > 0
    text = plot_texts(exp)
    assert top in text and "feature " not in text
    assert exp.targets is not None and exp.class_names[int(exp.targets[0])] in text  # the title names the class
    for html in (exp.to_html(), exp._repr_html_()):
        assert top in html and "feature 0" not in html
    back = uv.load(exp.save(tmp_path / "wine.npz"))
    assert back.feature_names == list(df.columns) and back.class_names == exp.class_names
    assert top in plot_texts(back)


def test_estimator_names_without_a_dataframe(wine) -> None:
    gbc, df, _ = wine
    exp = uv.explain(gbc, df.to_numpy()[:2], method="occlusion", baseline="mean",
                     background=df.to_numpy()[:20])
    assert exp.feature_names == [str(c) for c in gbc.feature_names_in_]
    assert exp.class_names == [str(c) for c in gbc.classes_]


def test_given_names_win_and_plot_takes_names(wine) -> None:
    gbc, df, _ = wine
    own = [f"c{j}" for j in range(df.shape[1])]
    exp = uv.explain(gbc, df.iloc[:1], method="occlusion", feature_names=own,
                     class_names=["a", "b", "c"], baseline=df.to_numpy()[-1:])  # another wine
    assert exp.feature_names == own and exp.class_names == ["a", "b", "c"]
    shown = [n.upper() for n in own]
    text = plot_texts(exp, feature_names=shown, class_names=["A", "B", "C"])
    assert any(n in text for n in shown) and not any(f"| {n} " in text for n in own)
    assert exp.feature_names == own  # the plot's names were for that drawing only
    assert shown[0] in exp.with_names(feature_names=shown).to_html(top_k=20)


def test_zoo_models_carry_their_names() -> None:
    data = uv.zoo.load_dataset("breast_cancer_mlp")
    exp = uv.explain(uv.zoo.breast_cancer_mlp(), data.X_test[:2], method="saliency")
    assert exp.feature_names == list(data.feature_names)
    assert exp.class_names == ["malignant", "benign"]
    assert "worst" in plot_texts(exp) or "mean" in plot_texts(exp)


def test_model_wrapper_names_and_torch_dataframe() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32),
                         columns=["height", "weight", "age"])
    exp = uv.explain(uv.Model(net, class_names=["no", "yes"]), frame, method="saliency")
    assert exp.feature_names == ["height", "weight", "age"] and exp.class_names == ["no", "yes"]
    model = uv.Model(net, feature_names=["h", "w", "a"])
    assert uv.explain(model, frame.to_numpy(), method="saliency").feature_names == ["h", "w", "a"]
    # a model's names for another width are not pinned on these columns
    wrong = uv.Model(net, feature_names=["only", "two"])
    assert uv.explain(wrong, frame.to_numpy(), method="saliency").feature_names is None
