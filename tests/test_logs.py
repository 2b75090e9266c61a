"""Log capture and secret masking, in this process (the replica's tee and logging hooks, no Ray)."""

import io
import logging
import threading

from lambdaml.serve import log_capture
from lambdaml.inputs import REDACTED


def test_a_secret_too_short_to_mask_is_left_alone_and_a_long_one_masked():
    with log_capture.capture(["ab", "long-secret-value"]) as logs:
        logs.add("about ab: long-secret-value\n")
    assert logs.text() == f"about ab: {REDACTED}\n"


def test_output_of_a_thread_the_model_started_is_masked_too():
    stream = io.StringIO()
    tee = log_capture._Tee(stream)
    log_capture.mask_everywhere(["replica-secret-1234"])
    try:
        with log_capture.capture([]):  # a prediction runs; its thread does not inherit the capture
            worker = threading.Thread(target=tee.write, args=("token=replica-secret-1234\n",))
            worker.start()
            worker.join()
        record = logging.LogRecord("model", logging.WARNING, __file__, 1, "using %s", ("replica-secret-1234",), None)
        log_capture._RootHandler().emit(record)  # a logging call outside any prediction
    finally:
        log_capture.mask_everywhere([])
    assert stream.getvalue() == f"token={REDACTED}\n"
    assert record.getMessage() == f"using {REDACTED}"
