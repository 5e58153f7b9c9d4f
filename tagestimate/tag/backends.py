"""Run a tag model: OpenVINO on a CPU (fast path), TensorFlow elsewhere or as fallback.

OpenVINO runs the same EfficientNetB0 several times faster than TensorFlow's generic CPU
kernels. It is forced to fp32: on CPUs with bf16 support it would otherwise default to
bf16 and drift. (TensorFlow Lite's XNNPACK was as fast but drifted up to 0.03 from an fp64
reference on NDL-layout weights, against 0.015 for TensorFlow and OpenVINO fp32.)
The converted model is cached, keyed by the weight file's content, so later runs start
without converting, and without importing TensorFlow at all.
"""

import collections
import contextlib
import hashlib
import logging
import os
import threading
import time

import numpy as np

from tagestimate import quiet_tensorflow
from tagestimate.model import embedding_model, load_model
from tagestimate.errors import UserError

log = logging.getLogger(__name__)
PROBABILITIES, EMBEDDING = "probabilities", "embedding"  # the converted model's output names


class BackendError(UserError, RuntimeError):
    """A backend that was asked for but cannot run; the message says what to install."""


def cache_dir():
    return os.environ.get("TAGESTIMATE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tagestimate"
    )


def openvino_available():
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_may_exist():
    """Cheap hint (no TensorFlow import) that a CUDA GPU could be visible."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")


def tensorflow_sees_gpu():
    quiet_tensorflow()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def choose_backend(requested):
    """The backend to use for `requested` (auto: OpenVINO on CPU when installed)."""
    if requested != "auto":
        backend = RUNNERS[requested]
        if not backend.available():
            raise BackendError(f"--backend {requested} needs {backend.requirement}")
        return requested
    if openvino_available() and not (gpu_may_exist() and tensorflow_sees_gpu()):
        return "openvino"
    return "tensorflow"


class TensorFlowRunner:
    """Keras model behind one traced function (no retracing per batch size), with two outputs: the
    probabilities and the embedding layer's vectors (model.json's `embedding_layer`)."""

    def __init__(self, bundle):
        quiet_tensorflow()
        import tensorflow as tf

        self.model = load_model(bundle.path, bundle.config, bundle.kind)
        both = embedding_model(self.model, bundle.config, bundle.path)
        size = bundle.config.image_size
        self._infer = tf.function(
            lambda batch: both(batch, training=False),
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
            autograph=False,
        )

    def predict(self, batch):
        return self.infer(batch)[0]

    def infer(self, batch):
        """(probabilities (n, labels), raw vectors (n, dim)), both float32."""
        batch = np.asarray(batch, dtype=np.float32)
        single = len(batch) == 1
        if single:  # a lone image goes through TensorFlow's matrix-vector kernel, whose sums differ
            batch = np.concatenate([batch, batch])  # in the last bits: as a pair it gets what a batch gets
        probabilities, vectors = (np.asarray(output, dtype=np.float32) for output in self._infer(batch))
        if single:
            probabilities, vectors = probabilities[:1], vectors[:1]
        return probabilities, vectors


class OpenVINORunner:
    """OpenVINO CPU runner; parallel streams through an async queue, fp32 throughout.

    One predict call uses every stream of the queue, so calls from several threads are
    served one at a time (a lock), each with its own results.
    """

    conversion_seconds = None  # how long this runner's conversion took; None: the cache had the model

    def __init__(self, bundle):
        import openvino as ov

        xml_path = self._cached_model(bundle, ov)
        properties = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"}
        self._start(ov.Core().compile_model(xml_path, "CPU", properties))

    def _start(self, compiled):
        import openvino as ov

        self.queue = ov.AsyncInferQueue(compiled, 0)
        # By name (set at conversion, _name_outputs), never by position: converters reorder outputs.
        self.outputs = (compiled.output(PROBABILITIES), compiled.output(EMBEDDING))
        self._lock = threading.Lock()
        self.queue.set_callback(self._collect)

    def _collect(self, request, userdata):
        results, index = userdata
        results[index] = tuple(request.get_tensor(output).data.copy() for output in self.outputs)

    def _cached_model(self, bundle, ov):
        key = hashlib.sha256()  # the weight file's content (its SHA-256, taken once by the bundle), config, version
        key.update(bundle.sha256.encode())
        key.update(bundle.config.to_json().encode())
        key.update(f"outputs: probabilities, {bundle.config.embedding}".encode())  # model.json may omit the layer
        key.update(ov.__version__.encode())
        folder = os.path.join(cache_dir(), "openvino")
        xml_path = os.path.join(folder, key.hexdigest()[:32] + ".xml")
        if os.path.isfile(xml_path) and os.path.isfile(xml_path[:-4] + ".bin"):
            return xml_path
        log.info("converting the model for OpenVINO (once per weight file; cached in %s)", folder)
        os.makedirs(folder, exist_ok=True)
        started = time.perf_counter()
        _convert_for_openvino(bundle, ov, xml_path)
        self.conversion_seconds = time.perf_counter() - started
        return xml_path

    def predict(self, batch):
        return self.infer(batch)[0]

    def infer(self, batch):
        """(probabilities (n, labels), raw vectors (n, dim)), both float32."""
        batch = np.asarray(batch, dtype=np.float32)
        jobs = max(1, len(self.queue))
        slices = [part for part in np.array_split(np.arange(len(batch)), jobs) if len(part)]
        results = {}
        # wait_all waits for every request of the shared queue: one call at a time.
        with self._lock:
            for index, part in enumerate(slices):
                self.queue.start_async({0: batch[part[0]:part[-1] + 1]}, (results, index))
            self.queue.wait_all()
        parts = [results[i] for i in range(len(slices))]
        return tuple(np.concatenate([part[n] for part in parts]).astype(np.float32, copy=False) for n in (0, 1))


def _convert_for_openvino(bundle, ov, xml_path):
    """Keras model -> SavedModel -> TensorFlow Lite flatbuffer -> OpenVINO model.

    The detour through TFLite is for accuracy: its converter folds BatchNorm into the
    convolutions and keeps swish as sigmoid * x, which OpenVINO then runs in exact fp32;
    converting the Keras model directly gives OpenVINO's approximate Swish op, measured
    0.0205 from an fp64 evaluation on NDL-layout weights against 0.0146 this way.
    """
    import tempfile

    quiet_tensorflow()
    import tensorflow as tf

    model = embedding_model(load_model(bundle.path, bundle.config, bundle.kind), bundle.config, bundle.path)
    # Staged beside the cache so that the final renames never cross file systems.
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=os.path.dirname(xml_path)) as staging, \
            _quiet_logger("tensorflow"):  # its SavedModel writer logs "Assets written to: .staging-..." at INFO
        saved = os.path.join(staging, "saved_model")
        model.export(saved, format="tf_saved_model", verbose=False)
        flatbuffer = os.path.join(staging, "model.tflite")
        with open(flatbuffer, "wb") as handle:
            handle.write(tf.lite.TFLiteConverter.from_saved_model(saved).convert())
        converted = ov.Core().read_model(flatbuffer)
        _name_outputs(converted, model, ov, bundle.config.image_size)
        ov.save_model(converted, os.path.join(staging, "model.xml"), compress_to_fp16=False)
        # .bin first: a visible .xml always has its weights beside it.
        os.replace(os.path.join(staging, "model.bin"), xml_path[:-4] + ".bin")
        os.replace(os.path.join(staging, "model.xml"), xml_path)


def _name_outputs(converted, model, ov, size):
    """Name the converted model's two outputs PROBABILITIES and EMBEDDING, matched to the Keras model's
    on a probe batch (TFLite and OpenVINO may reorder outputs, and both may have one shape)."""
    probe = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    expected = [np.asarray(output) for output in model(probe, training=False)]
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled(probe)
    found = [results[output] for output in compiled.outputs]
    order = match_outputs(expected, found)
    for name, index in zip((PROBABILITIES, EMBEDDING), order):
        converted.outputs[index].get_tensor().set_names({name})


def match_outputs(expected, found):
    """For each array of `expected`, the index of the array of `found` that is it: same shape, the
    closest values. BackendError when they cannot be told apart or one is missing."""
    order = []
    for reference in expected:
        scores = [np.abs(candidate - reference).max() if candidate.shape == reference.shape else np.inf
                  for candidate in found]
        best = int(np.argmin(scores))
        scale = np.abs(reference).max() or 1.0
        if not np.isfinite(scores[best]) or scores[best] > 0.1 * scale or best in order:  # matching, not accuracy
            raise BackendError("the model converted for OpenVINO does not give the Keras model's outputs; "
                               "run with --backend tensorflow")
        order.append(best)
    return order


@contextlib.contextmanager
def _quiet_logger(name):
    """Only warnings and errors from Python logger `name` while the block runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def make_runner(backend, bundle):
    """A ready runner for `backend` (from choose_backend) and a settings.ModelBundle."""
    return RUNNERS[backend].runner(bundle)


def _always():
    return True


# --backend name -> Backend: runner(bundle) is a class built from a settings.ModelBundle (path,
# ModelConfig, kind, sha256) with predict(batch of (n, size, size, 3) float32 pixels in 0-255) ->
# (n, labels) probabilities and infer(batch) -> (those probabilities, (n, dim) float32 raw vectors of
# model.json's embedding layer, from the same forward pass; not normalised); available() says whether it can run here, `requirement` what to
# install when it cannot. A new backend is a runner class and one entry here ("auto" keeps
# choosing between OpenVINO and TensorFlow); both engines and every Ray worker then offer it.
Backend = collections.namedtuple("Backend", "runner available requirement")
RUNNERS = {
    "openvino": Backend(OpenVINORunner, openvino_available, "the openvino package: pip install openvino"),
    "tensorflow": Backend(TensorFlowRunner, _always, "the tensorflow package: pip install -r requirements.txt"),
}
BACKENDS = ("auto", *RUNNERS)  # --backend choices
