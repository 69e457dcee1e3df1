from tcpdispatch.protocol import Connection, Hello, Role, State, Welcome


def test_handshake_round_trip() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    client.send(Hello("t", "c1"))
    assert server.receive_data(client.data_to_send()) == [Hello("t", "c1")]
    server.send(Welcome("s", 1000, 3000))
    assert client.receive_data(server.data_to_send()) == [Welcome("s", 1000, 3000)]
    assert client.state is State.OPEN and server.state is State.OPEN
