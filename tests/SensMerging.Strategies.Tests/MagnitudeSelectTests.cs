using SensMerging.Strategies.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Tests;

public sealed class MagnitudeSelectTests
{
    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Float16)]
    public void Radix_select_matches_sorting_for_every_rank(ScalarType dtype)
    {
        var rng = new Random(12);
        // mixed signs, repeated magnitudes, zeros, tiny and large values
        var values = Enumerable.Range(0, 1000).Select(i => i % 17 == 0 ? 0f : (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-4, 4)))).ToArray();
        values[5] = 3f;
        values[6] = -3f;
        using var source = torch.tensor(values).reshape(10, 100);
        using var tensor = source.to_type(dtype);
        using var scratch = torch.empty_like(tensor);
        using var asFloat = tensor.to_type(ScalarType.Float32);
        var sorted = asFloat.reshape(-1).data<float>().ToArray().Select(Math.Abs).OrderBy(v => v).ToArray();
        foreach (var k in new long[] { 1, 2, 59, 60, 61, 500, 999, 1000 })
        {
            Assert.Equal(sorted[k - 1], MagnitudeSelect.KthSmallestMagnitude(tensor, k, scratch));
        }
        foreach (var k in Enumerable.Range(1, 1000).Where(k => k % 37 == 0))
        {
            Assert.Equal(sorted[k - 1], MagnitudeSelect.KthSmallestMagnitude(tensor, k, scratch));
        }
    }

    [Fact]
    public void Radix_select_of_a_large_tensor_matches_sorting_for_ranks_far_apart()
    {
        // 2^18 + elements: the first pass also counts low bits in a window around the sampled bucket of each rank;
        // ranks at the ends and ties of repeated values must still come out exact (window hit or pass-1 fallback).
        var rng = new Random(3);
        const int n = 300_001;
        var values = new float[n];
        for (var i = 0; i < n; i++)
        {
            values[i] = i % 5 == 0 ? 0f : i % 7 == 0 ? 0.25f : (float)((rng.NextDouble() - 0.5) * Math.Exp(rng.NextDouble() * 6 - 3));
        }
        using var tensor = torch.tensor(values);
        using var scratch = torch.empty_like(tensor);
        var sorted = values.Select(MathF.Abs).Order().ToArray();
        foreach (var k in new long[] { 1, 60_000, 60_001, 60_002, 150_000, 280_000, n - 1, n })
        {
            Assert.Equal(sorted[k - 1], MagnitudeSelect.KthSmallestMagnitude(tensor, k, scratch));
        }
    }

    [Fact]
    public void Non_contiguous_input_uses_the_kthvalue_fallback()
    {
        using var source = torch.tensor(new float[] { 1, -5, 3, -2, 4, 0 }).reshape(2, 3);
        using var transposed = source.t();
        using var scratch = torch.empty_like(transposed);
        Assert.False(transposed.is_contiguous());
        Assert.Equal(3.0, MagnitudeSelect.KthSmallestMagnitude(transposed, 4, scratch));
        Assert.Throws<ArgumentOutOfRangeException>(() => MagnitudeSelect.KthSmallestMagnitude(transposed, 7, scratch));
    }
}
