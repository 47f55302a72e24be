using System.Runtime.InteropServices;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Abstractions.Tests;

public sealed class BFloat16BitsTests
{
    [Theory]
    [InlineData(0x3F80_0000u, (ushort)0x3F80)] // 1.0, exact
    [InlineData(0x3F80_8000u, (ushort)0x3F80)] // halfway, even below: down
    [InlineData(0x3F81_8000u, (ushort)0x3F82)] // halfway, even above: up
    [InlineData(0x3F80_8001u, (ushort)0x3F81)] // just above halfway: up
    [InlineData(0x3F80_7FFFu, (ushort)0x3F80)] // just below halfway: down
    [InlineData(0x8000_0000u, (ushort)0x8000)] // -0
    [InlineData(0x7F7F_FFFFu, (ushort)0x7F80)] // largest float rounds to +inf
    [InlineData(0xFF80_0000u, (ushort)0xFF80)] // -inf
    [InlineData(0x0000_0001u, (ushort)0x0000)] // smallest subnormal rounds to 0
    [InlineData(0x7FC0_0000u, BFloat16Bits.NaN)] // quiet NaN
    [InlineData(0x7F80_0001u, BFloat16Bits.NaN)] // signalling NaN whose payload would round away
    public void Rounds_to_nearest_even_and_every_nan_to_one_pattern(uint bits, ushort expected)
    {
        var value = BitConverter.UInt32BitsToSingle(bits);
        Assert.Equal(expected, BFloat16Bits.FromSingle(value));
        var vector = new ushort[8];
        BFloat16Bits.FromSingle(Enumerable.Repeat(value, 8).ToArray(), vector);
        Assert.All(vector, v => Assert.Equal(expected, v));
    }

    [Fact]
    public void Vector_and_scalar_rounding_agree_and_match_libtorch_on_finite_values()
    {
        var rng = new Random(5);
        var bits = new uint[1 << 16];
        for (var i = 0; i < bits.Length; i++)
        {
            // Random patterns, a quarter of them exactly halfway between two bfloat16 values.
            var r = (uint)rng.NextInt64(0, 1L << 32);
            bits[i] = i % 4 == 0 ? (r & 0xFFFF_0000u) | 0x8000u : r;
        }
        var values = MemoryMarshal.Cast<uint, float>(bits).ToArray();
        var vector = new ushort[values.Length + 3];
        BFloat16Bits.FromSingle(values.AsSpan(0, values.Length - 3), vector); // ends in a scalar tail
        BFloat16Bits.FromSingle(values.AsSpan(values.Length - 3), vector.AsSpan(values.Length - 3));
        using var torchRounded = torch.tensor(values).to(ScalarType.BFloat16);
        var reference = MemoryMarshal.Cast<byte, ushort>(torchRounded.bytes).ToArray();
        for (var i = 0; i < values.Length; i++)
        {
            Assert.Equal(BFloat16Bits.FromSingle(values[i]), vector[i]);
            if (!float.IsNaN(values[i]))
            {
                Assert.True(reference[i] == vector[i], $"0x{bits[i]:X8}: libtorch 0x{reference[i]:X4}, ours 0x{vector[i]:X4}");
            }
            else
            {
                Assert.Equal(BFloat16Bits.NaN, vector[i]);
            }
        }
    }

    [Fact]
    public void Widening_is_exact_for_every_pattern()
    {
        var all = Enumerable.Range(0, 1 << 16).Select(i => (ushort)i).ToArray();
        var widened = new float[all.Length];
        BFloat16Bits.ToSingle(all.AsSpan(0, all.Length - 5), widened);
        BFloat16Bits.ToSingle(all.AsSpan(all.Length - 5), widened.AsSpan(all.Length - 5));
        using var source = torch.empty(all.Length, ScalarType.BFloat16);
        MemoryMarshal.AsBytes(all.AsSpan()).CopyTo(source.bytes);
        using var torchWidened = source.to(ScalarType.Float32);
        var reference = torchWidened.data<float>().ToArray();
        for (var i = 0; i < all.Length; i++)
        {
            Assert.Equal((uint)i << 16, BitConverter.SingleToUInt32Bits(widened[i]));
            Assert.Equal(BitConverter.SingleToUInt32Bits(reference[i]), BitConverter.SingleToUInt32Bits(widened[i]));
            Assert.Equal(BitConverter.SingleToUInt32Bits(BFloat16Bits.ToSingle(all[i])), BitConverter.SingleToUInt32Bits(widened[i]));
        }
    }

    [Fact]
    public void Spans_too_short_are_refused()
    {
        Assert.Throws<ArgumentException>(() => BFloat16Bits.ToSingle(new ushort[9], new float[8]));
        Assert.Throws<ArgumentException>(() => BFloat16Bits.FromSingle(new float[9], new ushort[8]));
    }
}
