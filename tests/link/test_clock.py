from rtcontrol.link.clock import ClockSync


def test_min_rtt_sample_gives_the_offset() -> None:
    sync = ClockSync()
    # server clock is 100 s ahead; symmetric 1 ms each way
    sync.add(0.0, 100.001, 100.001, 0.002)
    # a disturbed sample: 50 ms queueing on the way back
    rtt, off = sync.add(1.0, 101.001, 101.001, 1.052)
    assert abs(rtt - 0.052) < 1e-9 and abs(off - 99.975) < 1e-9
    assert abs(sync.offset - 100.0) < 1e-9
    assert abs(sync.min_rtt - 0.002) < 1e-9
    assert abs(sync.to_local(105.0) - 5.0) < 1e-9
