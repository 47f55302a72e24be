using SensMerging.Abstractions;
using SensMerging.Strategies.Interpolation;
using static SensMerging.Strategies.Tests.MergeHarness;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Tests;

/// <summary>
/// The methods outside linear and the task-arithmetic family that give mergekit's bits in a half-precision compute dtype
/// (<see cref="StrategyTraits.RoundsIntermediates"/>), each against an element-by-element emulation of mergekit a6e4028's
/// code under torch 2.x's CPU semantics, written from the formats' definitions (<see cref="HalfPrecisionTests.Round"/>):
/// an elementwise operation on half-precision tensors computes in float32 and rounds its result; a Python scalar in a
/// product enters as a float32; a bound of <c>clamp</c> or a comparison's scalar is cast to the dtype; a sum over the
/// stacked models accumulates in float32 in model order and rounds once.
/// </summary>
public sealed class HalfPrecisionMethodsTests
{
    public static TheoryData<ScalarType, double> NearswapCases => new()
    {
        { ScalarType.BFloat16, 0.01 }, // not a bfloat16 value: enters the product as the float32 0.01
        { ScalarType.BFloat16, 0.5 },
        { ScalarType.Float16, 0.01 },
        { ScalarType.Float16, 3e-4 },
    };

    /// <summary>
    /// mergekit: <c>weight = (t / abs(a - b).clamp(min=1e-6)).clamp(0, 1)</c> (Python's float over a tensor is
    /// <c>reciprocal() * t</c>), <c>weight * b + (1 - weight) * a</c>.
    /// </summary>
    [Theory]
    [MemberData(nameof(NearswapCases))]
    public void Nearswap_rounds_every_operation_as_mergekit(ScalarType dtype, double t)
    {
        var (a, b) = NearswapInputs(dtype, t);
        var strategy = new NearSwapStrategy();
        var global = new Dictionary<string, object> { ["t"] = t };
        var got = Run(strategy, a, [b], global: global, compute: dtype);

        var floor = R(1e-6f, dtype);
        var expected = new float[a.Length];
        for (var e = 0; e < a.Length; e++)
        {
            var difference = MathF.Max(MathF.Abs(R(a[e] - b[e], dtype)), floor);
            var w = Math.Clamp(R(R(1f / difference, dtype) * (float)t, dtype), 0f, 1f);
            expected[e] = R(R(w * b[e], dtype) + R(R(1f - w, dtype) * a[e], dtype), dtype);
        }
        AssertBits(expected, got);
        var once = Run(strategy, a, [b], global: global).Select(v => R(v, dtype)).ToArray();
        Assert.Contains(Enumerable.Range(0, a.Length), e => Bits(once[e]) != Bits(expected[e]));
    }

    [Fact]
    public void Methods_that_round_like_mergekit_say_so() =>
        Assert.True(new NearSwapStrategy().Traits.RoundsIntermediates);

    /// <summary>
    /// A base and a model in the dtype: most entries within a few t of each other (blended), then the awkward ones: equal
    /// values, signed zeros, a difference of exactly t, subnormal and huge values, differences that overflow.
    /// </summary>
    private static (float[] A, float[] B) NearswapInputs(ScalarType dtype, double t)
    {
        var rng = new Random(17);
        var a = new List<float>();
        var b = new List<float>();
        for (var e = 0; e < 2000; e++)
        {
            var x = R((float)(rng.NextDouble() - 0.5), dtype);
            a.Add(x);
            b.Add(R(x + (float)(t * 4 * (rng.NextDouble() - 0.5)), dtype));
        }
        var tiny = dtype == ScalarType.Float16 ? (float)BitConverter.UInt16BitsToHalf(3) : BitConverter.UInt32BitsToSingle(0x00030000u);
        var huge = dtype == ScalarType.Float16 ? 60000f : 3e38f;
        var step = R((float)t, dtype);
        (float, float)[] special =
        [
            (0.25f, 0.25f), (0f, -0f), (-0f, 0f), (-0f, -0f), (0f, 0f), (1f, R(1f + step, dtype)), (-1f, R(-1f - step, dtype)),
            (tiny, -tiny), (tiny, 0f), (-tiny, 2 * tiny), (huge, -huge), (-huge, huge), (huge, huge), (huge, 0f), (0f, -huge),
            (R(1e-6f, dtype), 0f), (R(3e-6f, dtype), R(-3e-6f, dtype)),
        ];
        foreach (var (x, y) in special)
        {
            a.Add(x);
            b.Add(y);
        }
        return ([.. a], [.. b]);
    }

    private static float R(float value, ScalarType dtype) => HalfPrecisionTests.Round(value, dtype);

    private static uint Bits(float value) => BitConverter.SingleToUInt32Bits(value);

    /// <summary>Equal bit for bit (signed zeros told apart), with the first difference in the message.</summary>
    private static void AssertBits(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var e = 0; e < expected.Length; e++)
        {
            if (Bits(expected[e]) != Bits(actual[e]))
            {
                Assert.Fail($"element {e}: expected {expected[e]:R} (0x{Bits(expected[e]):X8}), got {actual[e]:R} (0x{Bits(actual[e]):X8})");
            }
        }
    }
}
