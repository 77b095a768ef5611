"""muonlab.tasks"""
