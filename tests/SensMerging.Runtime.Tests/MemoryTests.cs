using System.Diagnostics;
using SensMerging.Abstractions;
using SensMerging.Runtime.Model;
using SensMerging.Runtime.Tokenization;
using Xunit.Abstractions;

namespace SensMerging.Runtime.Tests;

[CollectionDefinition(nameof(MemoryCollection), DisableParallelization = true)]
public sealed class MemoryCollection;

/// <summary>Forward+backward one sample at a time must not keep activations alive: RSS stays flat from 10 to 100 passes.</summary>
[Collection(nameof(MemoryCollection))]
public sealed class MemoryTests(ITestOutputHelper output)
{
    [Fact]
    public void Resident_memory_is_flat_over_forward_backward_passes()
    {
        TestTorch.UseOneThread();
        var config = new LlamaConfig
        {
            HiddenSize = 128,
            IntermediateSize = 344,
            NumHiddenLayers = 2,
            NumAttentionHeads = 4,
            NumKeyValueHeads = 2,
            VocabSize = 100,
            MaxPositionEmbeddings = 256,
        };
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var model = LlamaModel.CreateRandom(config, tokenizer, seed: 5, new ModelLoadOptions(RequiresGrad: true));
        var text = string.Concat(Enumerable.Repeat("12+34=46; (a[b]{c}) ", 10));
        var sample = tokenizer.Encode(new TextSample(text[..60], text[60..]), 192);
        Assert.Equal(192, sample.Length);

        // Per pass: activations of ~192 tokens x (hidden 128, mlp 344, 4 heads x 192 scores) x 2 layers ~ several MB.
        var perPass = MeasurePass(model, sample);
        Pass(model, sample, 10);
        var after10 = Rss();
        // No garbage collection while measuring: activations must be freed by dispose scopes, not by finalizers.
        var noGc = GC.TryStartNoGCRegion(64L * 1024 * 1024);
        var stopwatch = Stopwatch.StartNew();
        Pass(model, sample, 90);
        var seconds = stopwatch.Elapsed.TotalSeconds;
        var after100 = Rss();
        if (noGc && System.Runtime.GCSettings.LatencyMode == System.Runtime.GCLatencyMode.NoGCRegion)
        {
            GC.EndNoGCRegion();
        }
        var growth = (after100 - after10) / (1024.0 * 1024.0);
        output.WriteLine($"RSS after 10 passes: {after10 / (1024.0 * 1024.0):F1} MiB; after 100 passes: {after100 / (1024.0 * 1024.0):F1} MiB; growth {growth:F1} MiB; {seconds / 90 * 1000:F1} ms per forward+backward; activations per pass ~{perPass / (1024.0 * 1024.0):F1} MiB; no-GC region: {noGc}.");
        Assert.True(growth < 48, $"RSS grew by {growth:F1} MiB between 10 and 100 forward+backward passes");
    }

    private static void Pass(LlamaModel model, TokenizedSample sample, int count)
    {
        for (var i = 0; i < count; i++)
        {
            model.ZeroGradients();
            using var loss = model.Loss(sample);
            loss.backward();
        }
    }

    /// <summary>The RSS a single pass adds while its graph is alive (a leak of this size per pass would be visible).</summary>
    private static long MeasurePass(LlamaModel model, TokenizedSample sample)
    {
        Pass(model, sample, 2);
        var before = Rss();
        var losses = new List<TorchSharp.torch.Tensor>();
        for (var i = 0; i < 5; i++)
        {
            losses.Add(model.Loss(sample));
        }
        var held = Rss();
        foreach (var loss in losses)
        {
            loss.Dispose();
        }
        return Math.Max(0, held - before) / 5;
    }

    private static long Rss()
    {
        using var process = Process.GetCurrentProcess();
        process.Refresh();
        return process.WorkingSet64;
    }
}
