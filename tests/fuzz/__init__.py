"""The fuzz harness of the core.

``corpus`` (``corpus6`` for IPv6, on ``sample``'s guests) builds frames of every
protocol with scapy, valid and malformed (each malformed one with the drop reason it
must be counted under); ``mutate`` damages frames the way hostile guests do;
``craft`` builds TCP segments that fit a flow's sequence numbers, so the fuzzer
reaches deep TCP states; ``host`` plays the shell, checking the core's actions;
``emitted`` (``emitted6``) checks every frame the core sends, ``chain6`` every frame
switched between guests against RA guard; ``namespaces`` holds the networks fuzzed
and what must hold of each after every step; ``machine`` is the hypothesis state
machine that drives them.

``tests/test_fuzz_*.py`` run it bounded in CI; ``python -m tests.fuzz.long``
runs it for as long as asked and reports frames per second.  ``records`` drives
a namespace from a plain byte string, with the same checks, for the
coverage-guided ``atheris_core`` (libFuzzer), run by hand.
"""
