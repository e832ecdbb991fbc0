import numpy as np

from rtcontrol.rigid import framewise_displacement, matrix_to_params, params_to_matrix, rotation_matrix


def test_params_round_trip_through_matrix() -> None:
    centre = np.array([1.0, -20.0, 15.0])
    p = np.array([1.5, -2.0, 0.7, 2.5, -1.2, 3.0])
    M = params_to_matrix(p, centre)
    np.testing.assert_allclose(matrix_to_params(M, centre), p, atol=1e-10)
    # the centre moves by the translation alone
    np.testing.assert_allclose(M[:3, :3] @ centre + M[:3, 3], centre + p[:3], atol=1e-10)


def test_rotation_about_s_turns_r_towards_a() -> None:
    np.testing.assert_allclose(rotation_matrix(0, 0, 90) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_framewise_displacement() -> None:
    fd = framewise_displacement(np.zeros(6), np.array([0.1, 0.0, -0.1, 0.0, 0.0, np.rad2deg(0.01)]))
    assert abs(fd - (0.2 + 0.5)) < 1e-9
