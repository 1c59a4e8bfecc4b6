"""One openSMILE instance, configured once and run again for every clip (its C API, SMILEapi).

``opensmile.Smile.process_signal`` builds a new native instance per call: it parses the feature
set's configuration, wires some fifty components, runs, frees them, then wraps the 88 numbers in
pandas frames indexed by timedeltas. For eGeMAPS on a 2 s clip the parse, the teardown and the
frames cost about a third of the call. openSMILE's ``smile_reset`` returns a finished instance to
its initial state (SMILEapi.h: "you may call run again without the need to call initialize
first"), so a session initialises once and each clip costs only the features' own computation.

The signal is fed exactly as ``Smile`` feeds it (float32 scaled by 32768, cast to int16, through
the same external-source and external-sink configurations), so the values are the same numbers.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

SOURCE = b"extsource"
SINK = b"extsink"


class SmileError(RuntimeError):
    """openSMILE refused a call; the message is its own."""


class SmileSession:
    """A native openSMILE instance of one feature set and level at one sample rate.

    Not thread-safe: one session per thread (a native instance runs one clip at a time).

    Args:
        feature_set: an ``opensmile.FeatureSet``.
        feature_level: an ``opensmile.FeatureLevel``.
        sample_rate: the rate of every signal this session will be given, in Hz.
    """

    def __init__(self, feature_set, feature_level, sample_rate: int):
        import opensmile
        from opensmile.core import lib

        self._handle = None  # close() is safe whatever fails below
        # The Smile object only resolves paths and names here; it never runs.
        reference = opensmile.Smile(feature_set=feature_set, feature_level=feature_level)
        self.feature_names = list(reference.feature_names)
        root = reference.default_config_root
        options = {  # what Smile._options and Smile._extract pass, in the same order
            "sink": os.path.join(root, opensmile.config.EXTERNAL_OUTPUT_SINGLE_CONFIG),
            "sinkLevel": feature_level.value,
            "bufferModeRbConf": os.path.join(root, "shared/BufferModeRb.conf.inc"),
            "frameModeFunctionalsConf": os.path.join(root, "shared/FrameModeFunctionals.conf.inc"),
            "source": os.path.join(root, opensmile.config.EXTERNAL_INPUT_CONFIG),
            "sampleRate": int(sample_rate),
            "nBits": 16,
        }
        self._api = lib.smileapi
        self._success = lib.SMILE_SUCCESS
        self._frames: list[np.ndarray] = []
        # One callback for the session's life: ctypes must keep it alive while native code holds it.
        self._callback = lib.ExternalSinkCallbackEx(self._collect)
        self._handle = self._api.smile_new()
        if not self._handle:
            raise SmileError("openSMILE could not create an instance")
        flat = [str(v).encode("ascii") for item in options.items() for v in item]
        argv = (ctypes.c_char_p * (len(flat) + 1))(*flat, None)
        self._check(
            self._api.smile_initialize(
                self._handle, reference.config_path.encode("ascii"), len(options), argv,
                reference.loglevel, 0, 0, 0,
            )
        )  # fmt: skip

    def _collect(self, data, rows, columns, meta, param) -> int:
        self._frames.append(np.ctypeslib.as_array(data, shape=(rows, columns)).copy())
        return 1

    def _check(self, code: int) -> None:
        if code != self._success:
            message = self._api.smile_error_msg(self._handle)
            raise SmileError(f"openSMILE failed (code {code}): {(message or b'').decode()}")

    def process(self, signal: np.ndarray) -> np.ndarray:
        """float32 ``[frames, features]`` of a mono signal in [-1, 1] (no frame: ``[0, n]``)."""
        pcm = (np.asarray(signal, dtype=np.float32) * np.float32(32768)).astype(np.int16)
        data = pcm.tobytes()
        self._frames = []
        # A reset instance forgets its sink callback: it is registered again before every run.
        self._check(
            self._api.smile_extsink_set_data_callback_ex(self._handle, SINK, self._callback, None)
        )
        self._check(
            self._api.smile_extaudiosource_write_data(self._handle, SOURCE, data, len(data))
        )
        self._check(self._api.smile_extaudiosource_set_external_eoi(self._handle, SOURCE))
        self._check(self._api.smile_run(self._handle))
        self._check(self._api.smile_reset(self._handle))
        frames, self._frames = self._frames, []
        if not frames:
            return np.zeros((0, len(self.feature_names)), dtype=np.float32)
        return np.vstack(frames)

    def close(self) -> None:
        """Free the native instance (also done when the session is collected)."""
        if self._handle:
            self._api.smile_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()
