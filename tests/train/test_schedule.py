from __future__ import annotations

import pytest

from certify.train.schedule import Ramp, Schedule, smooth_fraction


@pytest.mark.parametrize("shape", ["linear", "smooth"])
def test_ramp_holds_then_moves_monotonically_then_holds(shape: str) -> None:
    ramp = Ramp(0.0, 0.3, begin=10, length=100, shape=shape)  # type: ignore[arg-type]
    values = [ramp(s) for s in range(0, 130)]
    assert values[:11] == [0.0] * 11
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[110:] == [0.3] * 20


def test_smooth_fraction_is_continuous_at_its_knee() -> None:
    k = 0.25
    assert smooth_fraction(0.0) == 0.0 and smooth_fraction(1.0) == pytest.approx(1.0)
    assert smooth_fraction(k - 1e-9) == pytest.approx(smooth_fraction(k + 1e-9), abs=1e-6)


def test_standard_schedule_warms_up_then_ramps_kappa_down() -> None:
    s = Schedule.standard(0.1, steps_per_epoch=10, warmup_epochs=1, ramp_epochs=2, kappa=(1.0, 0.5))
    assert s.at(5) == (0.0, 1.0, 1.0)
    assert s.at(30) == (0.1, 0.5, 0.0)
