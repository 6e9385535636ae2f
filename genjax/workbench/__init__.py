"""Run-level tools over the runner: sweeps, the leaderboard, benchmarks, the SNR study and the
Hopfield experiment. They launch or drive whole runs; nothing below imports them."""
