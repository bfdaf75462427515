"""Progress lines with an ETA for a probe fit that sweeps regularisation strengths.

A fit tries each C in turn; one C's solver may stop at any iteration up to max_iter. The ETA
counts each finished C as one unit and the current C as its iterations over the mean
iteration count of the finished ones (over twice its count so far, at most max_iter, once it
runs past that mean). Before any C has finished it assumes max_iter for every
C and says "at most": later Cs start from the last optimum and usually take far fewer
iterations. Nothing is logged for fits shorter than `every_s`, so small probes stay quiet.
"""
from __future__ import annotations

import time

from absl import logging

from medssl_jax.loop import writers

EVERY_S = 15.0  # a progress line at most this often, and none for fits shorter than this


class FitProgress:
  """Logs '<name> probe: i/n values of C fitted, at iteration k of C=c, elapsed, ETA' at most
  every `every_s` seconds, and a closing line if it logged at all."""

  def __init__(self, name: str, num_cs: int, max_iter: int, *, every_s: float | None = None,
               clock=time.monotonic):
    self.name, self.num_cs, self.max_iter = name, num_cs, max_iter
    self.every_s, self.clock = EVERY_S if every_s is None else every_s, clock
    self.start = self.last = clock()
    self.iterations_done: list[int] = []  # per finished C
    self.logged = False

  def fraction_done(self, iteration: int) -> float:
    expected = (sum(self.iterations_done) / len(self.iterations_done) if self.iterations_done
                else self.max_iter)
    if self.max_iter and iteration >= expected:  # past the mean: assume half way, to max_iter
      expected = min(self.max_iter, 2 * iteration)
    current = min(1.0, iteration / max(expected, 1.0))
    return min(1.0, (len(self.iterations_done) + current) / self.num_cs)

  def eta_s(self, iteration: int) -> float | None:
    done = self.fraction_done(iteration)
    return None if done <= 0 else (self.clock() - self.start) * (1.0 - done) / done

  def update(self, c: float, iteration: int | None = None) -> None:
    """Called during the fit at C = c, and after it (iteration None) by finished_c."""
    now = self.clock()
    if now - self.last < self.every_s:
      return
    self.last, self.logged = now, True
    eta = self.eta_s(iteration or 0)
    bound = "at most " if not self.iterations_done and self.max_iter else ""
    where = f", at iteration {iteration} of C={c:g}" if iteration is not None else ""
    logging.info("%s probe: %d/%d values of C fitted%s, %s elapsed, ETA %s", self.name,
                 len(self.iterations_done), self.num_cs, where,
                 writers.format_duration(now - self.start),
                 "unknown" if eta is None else bound + writers.format_duration(eta))

  def finished_c(self, c: float, iterations: int = 0) -> None:
    """iterations: the solver's count at c (0 where unknown: each C then counts as one unit)."""
    self.iterations_done.append(iterations)
    self.update(c)

  def close(self, chosen_c: float) -> None:
    if self.logged or self.clock() - self.start >= self.every_s:
      logging.info("%s probe: fitted %d values of C in %s; chose C=%g", self.name, self.num_cs,
                   writers.format_duration(self.clock() - self.start), chosen_c)
