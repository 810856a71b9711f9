"""The counted security suite: every test here is one attack form, tagged with its kind."""
