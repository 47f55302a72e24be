namespace SensMerging.Zoo.Tasks;

/// <summary>Derives independent, stable seeds from a root seed and a label (no process-randomised string hashing).</summary>
public static class SeedMixer
{
    /// <summary>A 32-bit seed for <see cref="Random"/> from <paramref name="seed"/> and <paramref name="label"/>.</summary>
    public static int Derive(int seed, string label)
    {
        ArgumentNullException.ThrowIfNull(label);
        // FNV-1a over the label, then a splitmix64 finaliser over (seed, hash).
        var hash = 14695981039346656037UL;
        foreach (var c in label)
        {
            hash ^= c;
            hash *= 1099511628211UL;
        }
        var z = unchecked(hash + ((ulong)(uint)seed * 0x9E3779B97F4A7C15UL));
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        z ^= z >> 31;
        return (int)(z & 0x7FFFFFFF);
    }

    /// <summary>A Fisher-Yates shuffle of a copy of <paramref name="items"/>.</summary>
    public static List<T> Shuffled<T>(IEnumerable<T> items, Random random)
    {
        ArgumentNullException.ThrowIfNull(items);
        ArgumentNullException.ThrowIfNull(random);
        var list = items.ToList();
        for (var i = list.Count - 1; i > 0; i--)
        {
            var j = random.Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
        return list;
    }
}
