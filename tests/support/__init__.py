"""What the tests (and the benchmarks that build the chain) share; no test lives here.

- :mod:`tests.support.settings`: settings builders and the shipped wrapper catalogue;
- :mod:`tests.support.chain`: :class:`~tests.support.chain.AgentChain`, the whole chain on
  loopback (hub emulator + fleet, stand-in, :class:`~agent.app.AgentApp`);
- :mod:`tests.support.channel`: the AlwaysOn channel under test (settings, small services, the
  client running for a block) and the stand-in's side of the same;
- :mod:`tests.support.scripted_hub`: a scripted HTTPS server standing in for IoT Hub's API;
- :mod:`tests.support.network`: free loopback addresses;
- :mod:`tests.support.fakes`: in-memory fakes of the IoT Hub emulator's ports.

Rules: modules here import no test module; test modules import helpers from here only.
"""
