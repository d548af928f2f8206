import wit_world

# Calls of `count` this instance has had: a module global lives as long as the instance.
calls = 0


class WitWorld(wit_world.WitWorld):
    def add(self, a: int, b: int) -> int:
        return a + b

    def count(self) -> int:
        global calls
        calls += 1
        return calls

    def fail(self, message: str) -> None:
        raise ValueError(message)
