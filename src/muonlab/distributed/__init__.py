"""muonlab.distributed"""
