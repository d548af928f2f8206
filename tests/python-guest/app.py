import wit_world

calls = 0

class WitWorld(wit_world.WitWorld):
    def add(self, a: int, b: int) -> int:
        return a + b

    def count(self) -> int:
        global calls
        calls += 1
        return calls
