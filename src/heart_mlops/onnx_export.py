"""A fitted pipeline as one ONNX graph (skl2onnx, float64), checked against its predict_proba.

The graph takes the 13 raw features, as the pipeline does, and gives P(no disease), P(disease).
Three converters of this project are registered with skl2onnx, where its own do not match
scikit-learn:

- `ClinicalInput` (features.py): the missing-code rule (ca 4, thal 0, chol 0, trestbps 0 ->
  NaN) as Equal and Where nodes, so the ONNX file is the whole model and the parity check
  covers the rule;
- `SimpleImputer` on float64: ONNX Runtime's Imputer has no double kernel; Where(IsNaN) with
  the fitted statistics, features empty at fit dropped (or 0 with keep_empty_features);
- binary `CalibratedClassifierCV`: skl2onnx's isotonic calibration takes the nearest threshold
  instead of interpolating, and its calibration of a forest mixes float and double; this one
  computes scikit-learn's formulas (sigmoid, linear interpolation) in double.

Tree ensembles compare float32 features with float64 thresholds in scikit-learn; the graph
rounds their input to float32 the same way (`_round_tree_inputs`).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import onnx
from onnx import TensorProto, helper
from skl2onnx import get_model_alias, to_onnx, update_registered_converter
from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
from skl2onnx.algebra.onnx_ops import (
    OnnxAdd,
    OnnxCast,
    OnnxClip,
    OnnxDiv,
    OnnxEqual,
    OnnxExp,
    OnnxGather,
    OnnxIdentity,
    OnnxIsNaN,
    OnnxLess,
    OnnxMatMul,
    OnnxMax,
    OnnxMul,
    OnnxReduceSumApi11,
    OnnxReduceSumSquareApi18,
    OnnxReshape,
    OnnxSigmoid,
    OnnxSub,
    OnnxWhere,
)
from skl2onnx.common.data_types import DoubleTensorType
from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer
from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes
from skl2onnx.shape_calculators.linear_classifier import (
    calculate_linear_classifier_output_shapes,
)
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.svm import SVC

from heart_mlops.data import FEATURES, MISSING_CODES
from heart_mlops.features import ClinicalInput
from heart_mlops.onnx_model import OnnxModel, Probe, disagreement, probe_rows

log = logging.getLogger(__name__)

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# TreeEnsemble (ai.onnx.ml 5) sums in double; skl2onnx converts up to ai.onnx.ml 3 and the
# version is raised after conversion (`_with_tree_ensemble_opset`)
TREE_ENSEMBLE_OPSET = 5
_TREE_OPS = {"TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble"}


class ConversionError(Exception):
    """The pipeline has no ONNX form that agrees with it (the reason is the message)."""


def to_onnx_bytes(pipeline) -> bytes:
    """The fitted `pipeline` (raw rows (n, 13) in, predict_proba out) as a serialized ONNX
    model: input "X" double (n, 13), output "probabilities" double (n, 2) (skl2onnx's "label"
    output removed: ONNX Runtime then drops the nodes only it needed, 10-35 us a row).
    ConversionError when skl2onnx cannot convert a step."""
    _register_converters()
    try:
        model = to_onnx(
            pipeline,
            np.zeros((1, len(FEATURES))),
            target_opset=TARGET_OPSET,
            options={id(pipeline[-1]): {"zipmap": False}},
        )
    except Exception as exc:  # skl2onnx raises many types for what it cannot convert
        raise ConversionError(f"{type(exc).__name__}: {str(exc)[:300]}") from None
    kept = [output for output in model.graph.output if output.name == "probabilities"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    return _with_tree_ensemble_opset(_round_tree_inputs(model)).SerializeToString()


def export(pipeline, threshold: float, rows: np.ndarray | None = None) -> tuple[bytes, Probe]:
    """Convert `pipeline` and check it: P(disease) of ONNX Runtime within
    onnx_model.PARITY_TOLERANCE of predict_proba and the same decisions at `threshold` on the
    probe rows (`rows`, default onnx_model.probe_rows()). -> (ONNX bytes, the Probe: rows and
    the pipeline's P(disease), stored with the model to check it again at load).

    ConversionError with the reason when it cannot be converted or disagrees."""
    rows = probe_rows() if rows is None else rows
    column = list(pipeline.classes_).index(1)
    probe = Probe(rows, pipeline.predict_proba(rows)[:, column], column)
    onnx_bytes = to_onnx_bytes(pipeline)
    try:
        served = OnnxModel(onnx_bytes, column)(rows)
    except Exception as exc:  # ONNX Runtime refusing the graph
        raise ConversionError(f"ONNX Runtime cannot run it: {str(exc)[:300]}") from None
    problem = disagreement(served, probe.expected, threshold)
    if problem:
        raise ConversionError(problem)
    return onnx_bytes, probe


# --- the graph after conversion ---------------------------------------------------------------


def _with_tree_ensemble_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Import ai.onnx.ml at TREE_ENSEMBLE_OPSET when a TreeEnsemble node is in the graph."""
    if any(node.op_type == "TreeEnsemble" for node in model.graph.node):
        for opset in model.opset_import:
            if opset.domain == "ai.onnx.ml":
                opset.version = TREE_ENSEMBLE_OPSET
    return model


def _round_tree_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Round the double input of every tree ensemble to float32 and back, as scikit-learn does
    before comparing features with thresholds."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        info.name: info.type.tensor_type.elem_type
        for info in [*inferred.graph.value_info, *inferred.graph.input]
    }
    nodes = []
    for node in model.graph.node:
        source = node.input[0] if node.input else None
        if node.op_type in _TREE_OPS and types.get(source) == TensorProto.DOUBLE:
            as_float, rounded = f"{node.name}_x32", f"{node.name}_x32_64"
            nodes.append(helper.make_node("Cast", [source], [as_float], to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Cast", [as_float], [rounded], to=TensorProto.DOUBLE))
            node.input[0] = rounded
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


# --- converters -------------------------------------------------------------------------------


@functools.cache
def _register_converters() -> None:
    update_registered_converter(
        ClinicalInput,
        "HeartMlopsClinicalInput",
        _same_width_shape,
        _convert_clinical_input,
        parser=_parse_clinical_input,
    )
    update_registered_converter(
        SimpleImputer,
        "SklearnSimpleImputer",
        _imputer_shape,
        _convert_imputer,
        overwrite=True,
    )
    update_registered_converter(
        CalibratedClassifierCV,
        "SklearnCalibratedClassifierCV",
        calculate_linear_classifier_output_shapes,
        _convert_calibrated,
        overwrite=True,
        options={"zipmap": [True, False, "columns"], "nocl": [True, False]},
    )
    for forest in (RandomForestClassifier, ExtraTreesClassifier):
        update_registered_converter(
            forest,
            get_model_alias(forest),
            _double_probabilities_shape,
            _convert_forest,
            overwrite=True,
            options={"zipmap": [True, False, "columns"], "nocl": [True, False]},
        )


def _parse_clinical_input(scope, model, inputs, custom_parsers=None):
    """ClinicalInput's output is (n, 13) like its input: declared so the ColumnTransformer
    after it can select columns."""
    operator = scope.declare_local_operator(get_model_alias(type(model)), model)
    operator.inputs = inputs
    output = scope.declare_local_variable("clinical", DoubleTensorType([None, len(FEATURES)]))
    operator.outputs.append(output)
    return operator.outputs


def _double_probabilities_shape(operator) -> None:
    """A classifier's outputs, its probabilities in double (skl2onnx declares a forest's float)."""
    calculate_linear_classifier_output_shapes(operator)
    operator.outputs[1].type = DoubleTensorType(operator.outputs[1].type.shape)


def _imputer_shape(operator) -> None:
    """skl2onnx's shape, less the features scikit-learn drops (empty at fit)."""
    calculate_sklearn_imputer_output_shapes(operator)
    imputer = operator.raw_operator
    if not imputer.keep_empty_features:
        kept = int(np.count_nonzero(~np.isnan(np.asarray(imputer.statistics_, dtype=float))))
        shape = operator.outputs[0].type.shape
        operator.outputs[0].type = operator.outputs[0].type.__class__([shape[0], kept])


def _same_width_shape(operator) -> None:
    operator.outputs[0].type = DoubleTensorType([None, len(FEATURES)])


def _convert_clinical_input(scope, operator, container) -> None:
    """X with each column's missing code (data.MISSING_CODES) replaced by NaN."""
    version = container.target_opset
    codes = np.full((1, len(FEATURES)), np.nan)  # NaN never equals: other columns kept
    for name, code in MISSING_CODES.items():
        codes[0, FEATURES.index(name)] = code
    X = OnnxCast(operator.inputs[0], to=TensorProto.DOUBLE, op_version=version)
    is_code = OnnxEqual(X, codes, op_version=version)
    OnnxWhere(
        is_code, np.array([np.nan]), X, op_version=version, output_names=operator.outputs[:1]
    ).add_to(scope, container)


def _convert_imputer(scope, operator, container) -> None:
    """SimpleImputer (NaN marker) on double input; skl2onnx's own converter otherwise."""
    imputer = operator.raw_operator
    if not isinstance(operator.inputs[0].type, DoubleTensorType):
        convert_sklearn_imputer(scope, operator, container)
        return
    missing = imputer.missing_values
    if imputer.add_indicator or not (isinstance(missing, float) and np.isnan(missing)):
        raise NotImplementedError("SimpleImputer with an indicator or a marker other than NaN")
    version = container.target_opset
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    X = operator.inputs[0]
    empty = np.isnan(statistics)
    if imputer.keep_empty_features:
        statistics = np.where(empty, 0.0, statistics)
    elif empty.any():  # scikit-learn drops features that were all missing at fit
        kept = np.flatnonzero(~empty).astype(np.int64)
        X, statistics = OnnxGather(X, kept, axis=1, op_version=version), statistics[kept]
    OnnxWhere(
        OnnxIsNaN(X, op_version=version),
        statistics.reshape(1, -1),
        X,
        op_version=version,
        output_names=operator.outputs[:1],
    ).add_to(scope, container)


def _convert_calibrated(scope, operator, container) -> None:
    """Binary CalibratedClassifierCV: the mean over its calibrated members of the calibrated
    score of class 1, as `_CalibratedClassifier.predict_proba` computes it."""
    model = operator.raw_operator
    if len(model.classes_) != 2 or list(model.classes_) != [0, 1]:
        raise NotImplementedError("calibrated classifier of classes other than 0, 1")
    version = container.target_opset
    members = [
        _calibrated_member(member, operator.inputs[0], version)
        for member in model.calibrated_classifiers_
    ]
    disease = members[0]
    for member in members[1:]:
        disease = OnnxAdd(disease, member, op_version=version)
    if len(members) > 1:
        disease = OnnxDiv(disease, np.array([float(len(members))]), op_version=version)
    disease = OnnxReshape(disease, np.array([-1, 1], dtype=np.int64), op_version=version)
    name = scope.get_unique_variable_name("disease")
    OnnxIdentity(disease, op_version=version, output_names=[name]).add_to(scope, container)
    _binary_outputs(scope, operator, container, name)


def _binary_outputs(scope, operator, container, disease: str) -> None:
    """The classifier's outputs from P(class 1) `disease` (n, 1): label (argmax) and
    probabilities [1 - P, P]."""
    one, healthy = scope.get_unique_variable_name("one"), scope.get_unique_variable_name("p0")
    container.add_initializer(one, TensorProto.DOUBLE, [1], [1.0])
    container.add_node("Sub", [one, disease], [healthy])
    probabilities = operator.outputs[1].full_name
    container.add_node("Concat", [healthy, disease], [probabilities], axis=1)
    container.add_node(
        "ArgMax", [probabilities], [operator.outputs[0].full_name], axis=1, keepdims=0
    )


def _convert_forest(scope, operator, container) -> None:
    """A binary forest of classification trees on double input as one TreeEnsemble (ai.onnx.ml
    5) averaging each tree's P(class 1) in double, on features rounded to float32 first."""
    forest = operator.raw_operator
    if not isinstance(operator.inputs[0].type, DoubleTensorType) or list(forest.classes_) != [0, 1]:
        raise NotImplementedError("forest on float input or of classes other than 0, 1")
    attributes = _tree_ensemble_attributes([estimator.tree_ for estimator in forest.estimators_])
    as_float, rounded, averaged = (scope.get_unique_variable_name(n) for n in ("x32", "x", "p1"))
    container.add_node("Cast", [operator.inputs[0].full_name], [as_float], to=TensorProto.FLOAT)
    container.add_node("Cast", [as_float], [rounded], to=TensorProto.DOUBLE)
    container.add_node(
        "TreeEnsemble",
        [rounded],
        [averaged],
        op_domain="ai.onnx.ml",
        op_version=TARGET_OPSET["ai.onnx.ml"],
        name=scope.get_unique_operator_name("TreeEnsemble"),
        **attributes,
    )
    _binary_outputs(scope, operator, container, averaged)


def _tree_ensemble_attributes(trees) -> dict:
    """TreeEnsemble attributes (mode x <= split -> true) of fitted sklearn trees: the mean of
    each tree's leaf fraction of class 1."""
    features, splits, true_ids, true_leafs, false_ids, false_leafs, weights, roots = (
        [] for _ in range(8)
    )
    for tree in trees:
        branches = np.flatnonzero(tree.children_left >= 0)
        leaves = np.flatnonzero(tree.children_left < 0)
        counts = tree.value[:, 0, :]
        fraction = counts[:, 1] / np.where(counts.sum(axis=1) == 0, 1.0, counts.sum(axis=1))
        node_index = {node: len(features) + i for i, node in enumerate(branches)}
        leaf_index = {node: len(weights) + i for i, node in enumerate(leaves)}
        weights.extend(fraction[leaves])
        if len(branches) == 0:  # a single leaf: one split whose both sides lead to it
            roots.append(len(features))
            features.append(0), splits.append(0.0)
            true_ids.append(leaf_index[0]), true_leafs.append(1)
            false_ids.append(leaf_index[0]), false_leafs.append(1)
            continue
        roots.append(node_index[0])
        for node in branches:
            features.append(int(tree.feature[node]))
            splits.append(float(tree.threshold[node]))
            for child, ids, leafs in (
                (tree.children_left[node], true_ids, true_leafs),
                (tree.children_right[node], false_ids, false_leafs),
            ):
                is_leaf = child in leaf_index
                ids.append(leaf_index[child] if is_leaf else node_index[child])
                leafs.append(int(is_leaf))
    return {
        "nodes_featureids": features,
        "nodes_splits": helper.make_tensor("splits", TensorProto.DOUBLE, [len(splits)], splits),
        "nodes_modes": helper.make_tensor(
            "modes", TensorProto.UINT8, [len(splits)], [0] * len(splits)
        ),
        "nodes_truenodeids": true_ids,
        "nodes_trueleafs": true_leafs,
        "nodes_falsenodeids": false_ids,
        "nodes_falseleafs": false_leafs,
        "leaf_targetids": [0] * len(weights),
        "leaf_weights": helper.make_tensor("weights", TensorProto.DOUBLE, [len(weights)], weights),
        "tree_roots": roots,
        "n_targets": 1,
        "aggregate_function": 0,  # AVERAGE
        "post_transform": 0,  # NONE
    }


def _calibrated_member(member, X, version):
    """One member's calibrated P(class 1), shape (n,): its estimator's decision_function (or
    P(class 1) without one), then the sigmoid or isotonic calibrator."""
    estimator = member.estimator
    if isinstance(estimator, SVC):
        score = _svc_decision(estimator, X, version)
    else:
        raw = hasattr(estimator, "decision_function")
        scores = OnnxSubEstimator(
            estimator, X, op_version=version, options={"raw_scores": True} if raw else {}
        )
        score = OnnxGather(scores[1], np.array(1, dtype=np.int64), axis=1, op_version=version)
        score = OnnxCast(score, to=TensorProto.DOUBLE, op_version=version)
    (calibrator,) = member.calibrators
    if member.method == "sigmoid":
        linear = OnnxAdd(
            OnnxMul(score, np.array([float(calibrator.a_)]), op_version=version),
            np.array([float(calibrator.b_)]),
            op_version=version,
        )
        return OnnxSigmoid(OnnxSub(np.array([0.0]), linear, op_version=version), op_version=version)
    if member.method == "isotonic":
        return _isotonic(calibrator, score, version)
    raise NotImplementedError(f"calibration method {member.method}")


def _svc_decision(svc, X, version):
    """SVC.decision_function of a binary linear or RBF SVC, shape (n,), in double (ONNX's
    SVMClassifier holds its support vectors as float32)."""
    if svc.kernel not in ("linear", "rbf") or len(svc.classes_) != 2:
        raise NotImplementedError(f"SVC with kernel {svc.kernel!r}")
    vectors = np.asarray(svc.support_vectors_, dtype=np.float64)
    weights = np.asarray(svc.dual_coef_[0], dtype=np.float64)
    intercept = np.array([float(svc.intercept_[0])])
    if svc.kernel == "linear":
        kernel_weights = OnnxMatMul(X, weights @ vectors, op_version=version)
        return OnnxAdd(kernel_weights, intercept, op_version=version)
    gamma = float(svc._gamma)  # "scale" and "auto" resolved at fit; the parity check guards it
    squared = OnnxAdd(
        OnnxReduceSumSquareApi18(X, axes=[1], keepdims=1, op_version=version),
        np.einsum("ij,ij->i", vectors, vectors).reshape(1, -1),
        op_version=version,
    )
    distances = OnnxMax(
        OnnxSub(squared, OnnxMatMul(X, 2.0 * vectors.T, op_version=version), op_version=version),
        np.array([0.0]),
        op_version=version,
    )
    kernel = OnnxExp(OnnxMul(distances, np.array([-gamma]), op_version=version), op_version=version)
    return OnnxAdd(OnnxMatMul(kernel, weights, op_version=version), intercept, op_version=version)


def _isotonic(calibrator, score, version):
    """IsotonicRegression.predict: clip to the fitted range, then scipy's linear interp1d."""
    x = np.asarray(calibrator.X_thresholds_, dtype=np.float64)
    y = np.asarray(calibrator.y_thresholds_, dtype=np.float64)
    if calibrator.out_of_bounds != "clip" or calibrator.increasing_ not in (True, False):
        raise NotImplementedError("isotonic calibration without out_of_bounds='clip'")
    if len(x) == 1:
        return OnnxAdd(OnnxMul(score, np.array([0.0]), op_version=version), y, op_version=version)
    score = OnnxClip(
        score, np.array(calibrator.X_min_), np.array(calibrator.X_max_), op_version=version
    )
    column = OnnxReshape(score, np.array([-1, 1], dtype=np.int64), op_version=version)
    below = OnnxCast(
        OnnxLess(x.reshape(1, -1), column, op_version=version),
        to=TensorProto.INT64,
        op_version=version,
    )
    # searchsorted(x, score, side="left"), kept in 1..len(x)-1 as interp1d does
    index = OnnxReduceSumApi11(below, axes=[1], keepdims=0, op_version=version)
    high = OnnxClip(
        index, np.array(1, dtype=np.int64), np.array(len(x) - 1, dtype=np.int64), op_version=version
    )
    low = OnnxSub(high, np.array(1, dtype=np.int64), op_version=version)
    x_low, x_high = (OnnxGather(x, i, op_version=version) for i in (low, high))
    y_low, y_high = (OnnxGather(y, i, op_version=version) for i in (low, high))
    slope = OnnxDiv(
        OnnxSub(y_high, y_low, op_version=version),
        OnnxSub(x_high, x_low, op_version=version),
        op_version=version,
    )
    return OnnxAdd(
        OnnxMul(slope, OnnxSub(score, x_low, op_version=version), op_version=version),
        y_low,
        op_version=version,
    )
