"""muonlab.optim"""
