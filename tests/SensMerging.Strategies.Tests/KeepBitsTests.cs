using System.Runtime.Intrinsics;
using SensMerging.Strategies.Common;

namespace SensMerging.Strategies.Tests;

public sealed class KeepBitsTests
{
    /// <summary>
    /// A pass writes the mask in runs of 1 to 16 bits at any position (blocks of any size, vector bodies and scalar ends),
    /// the merge pass reads it back in other runs: every bit must be the one written, whatever the pooled array held.
    /// </summary>
    [Theory]
    [InlineData(1000, 1)]
    [InlineData(4099, 2)]
    [InlineData(17, 3)]
    public void Runs_written_at_any_position_read_back_in_other_runs(int elements, int seed)
    {
        var rng = new Random(seed);
        // A mask of ones returned to the pool first: the next one may get its array back, dirty.
        using (var dirty = new KeepBits(elements))
        {
            for (long p = 0; p < elements; p += KeepBits.MaxRun)
            {
                dirty.Write(p, uint.MaxValue, (int)Math.Min(KeepBits.MaxRun, elements - p));
            }
        }
        var expected = new bool[elements];
        using var bits = new KeepBits(elements);
        for (long p = 0; p < elements;)
        {
            var count = (int)Math.Min(rng.Next(1, KeepBits.MaxRun + 1), elements - p);
            var run = (uint)rng.Next(1 << KeepBits.MaxRun);
            for (var k = 0; k < count; k++)
            {
                expected[p + k] = ((run >> k) & 1) != 0;
            }
            bits.Write(p, run, count);
            p += count;
        }
        for (long p = 0; p < elements;)
        {
            var count = (int)Math.Min(rng.Next(1, KeepBits.MaxRun + 1), elements - p);
            var read = bits.Read(p, count);
            for (var k = 0; k < count; k++)
            {
                Assert.True(expected[p + k] == (((read >> k) & 1) != 0), $"bit {p + k} of {elements}");
            }
            Assert.Equal(0u, read >> count);
            p += count;
        }
    }

    [Fact]
    public void A_disposed_mask_refuses_its_pointer()
    {
        var bits = new KeepBits(64);
        bits.Dispose();
        Assert.Throws<ObjectDisposedException>(() => bits.Read(0, 1));
        bits.Dispose();
    }

    [Fact]
    public void Lane_masks_and_their_bits_convert_both_ways_at_both_widths()
    {
        foreach (var pattern in new uint[] { 0, 1, 0x80, 0xA5, 0xFF })
        {
            Assert.Equal(pattern, FloatLanes8.MaskBits(FloatLanes8.MaskFromBits(pattern)));
        }
        if (Vector512.IsHardwareAccelerated)
        {
            foreach (var pattern in new uint[] { 0, 1, 0x8000, 0xA5C3, 0xFFFF })
            {
                Assert.Equal(pattern, FloatLanes16.MaskBits(FloatLanes16.MaskFromBits(pattern)));
            }
        }
    }

    /// <summary>The bits a pass stores are DARE's draws: lane k of the vector keep mask is Uniform24(index + k) &lt; threshold.</summary>
    [Fact]
    public void Random_keep_bits_are_the_scalar_draws()
    {
        var key = CounterRandom.StreamKey(42);
        var threshold = CounterRandom.Threshold(0.3);
        for (long index = 0; index < 4096; index += 16)
        {
            var eight = FloatLanes8.MaskBits(FloatLanes8.RandomKeep(key, index, threshold));
            for (var k = 0; k < 8; k++)
            {
                Assert.Equal(CounterRandom.Uniform24(key, index + k) < threshold, ((eight >> k) & 1) != 0);
            }
            if (Vector512.IsHardwareAccelerated)
            {
                var sixteen = FloatLanes16.MaskBits(FloatLanes16.RandomKeep(key, index, threshold));
                for (var k = 0; k < 16; k++)
                {
                    Assert.Equal(CounterRandom.Uniform24(key, index + k) < threshold, ((sixteen >> k) & 1) != 0);
                }
            }
        }
    }
}
