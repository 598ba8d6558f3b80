"""Administration: the AdminService (enrollment tokens, revocation, merged signals, audit log).

A facade over the domain packages for admin certificates; it holds no domain logic.
"""
