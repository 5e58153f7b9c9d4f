"""How far a folder's crawl has got: a tqdm bar on a terminal; elsewhere (a log file, a batch job)
a log line every LOG_EVERY images and one at the end, so a long run is never silent."""

import logging

from tqdm import tqdm

log = logging.getLogger(__name__)

LOG_EVERY = 100  # images between two progress lines when stderr is not a terminal


class Progress:
    """A context manager counting one folder's images: `update()` for each image saved."""

    def __init__(self, name, total=None, initial=0):
        self.name = name
        self.total = total
        self.count = initial
        self._bar = tqdm(total=total, initial=initial, desc=name, unit="img", disable=None)  # off unless a TTY
        self._log = self._bar.disable  # read now: close() disables every bar
        self._logged = initial

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self._bar.close()
        if self._log and exc_type is None:
            log.info("%s: %s images; finished", self.name, self._so_far())
        return False

    def update(self, count=1):
        self.count += count
        self._bar.update(count)
        if self._log and self.count // LOG_EVERY > self._logged // LOG_EVERY:
            self._logged = self.count
            log.info("%s: %s images", self.name, self._so_far())

    def _so_far(self):
        return f"{self.count}/{self.total}" if self.total is not None else str(self.count)
