"""muonlab.experiments"""
