namespace SensMerging.Registry.Tests;

public sealed class PlotAndReproduceTests
{
    [Fact]
    public async Task Plot_writes_a_png_of_the_coefficients()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var rec = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp), "out");
        var png = temp.File("plots/coef.png");
        CoefficientPlot.Write(rec, png);
        var bytes = await File.ReadAllBytesAsync(png);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, bytes[..8]);
        Assert.True(bytes.Length > 5000, $"PNG is only {bytes.Length} bytes");
        var keep = Environment.GetEnvironmentVariable("SENSMERGE_KEEP_PLOT");
        if (!string.IsNullOrEmpty(keep))
        {
            File.Copy(png, keep, overwrite: true);
        }
        var noCoef = rec with { Coefficients = null };
        Assert.Throws<InvalidOperationException>(() => CoefficientPlot.Write(noCoef, temp.File("x.png")));
        Assert.Equal(["emb", "L0", "L1", "L2", "norm", "head"], Samples.Groups.Select(CoefficientPlot.ShortLabel));
    }

    [Fact]
    public async Task Reproduction_plan_pins_hub_references_to_commits()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var rec = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp, "dare_ties", ["org/math@main", "org/code", "./experts/knowledge"]), "out");
        var plan = ReproductionPlan.From(rec);
        var mathCommit = Samples.Sha("org/math@main")[..40];
        var codeCommit = Samples.Sha("org/code")[..40];
        Assert.Contains("- model: org/math@" + mathCommit + "\n", plan.PinnedConfigText, StringComparison.Ordinal);
        Assert.Contains("- model: org/code@" + codeCommit + "\n", plan.PinnedConfigText, StringComparison.Ordinal);
        Assert.Contains("base_model: org/base@" + new string('b', 40) + "\n", plan.PinnedConfigText, StringComparison.Ordinal);
        Assert.Contains("- model: ./experts/knowledge\n", plan.PinnedConfigText, StringComparison.Ordinal);
        Assert.DoesNotContain("@main", plan.PinnedConfigText, StringComparison.Ordinal);
        Assert.Equal(42, plan.Seed);
        Assert.Equal("float16", plan.OutDtype);
        Assert.Contains(plan.Warnings, w => w.Contains("knowledge", StringComparison.Ordinal));
        Assert.Equal(4, plan.Inputs.Count);
        Assert.Contains("reproduce " + rec.Id, plan.ToText(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Output_comparison_finds_identical_and_differing_files()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var a = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp), "a");
        // Same seed content written into another folder: identical hashes.
        var b = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp), "b");
        b = b with { Outputs = b.Outputs! with { Files = a.Outputs!.Files } };
        var same = OutputComparison.Compare(a, b);
        Assert.True(same.Identical);
        Assert.Equal(2, same.FilesCompared);

        var c = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp), "c");
        var cOut = c.Outputs!;
        c = c with { Outputs = cOut with { Files = [.. cOut.Files, new FileHash("README.md", new string('e', 64), 5)] } };
        var diff = OutputComparison.Compare(a, c);
        Assert.False(diff.Identical);
        Assert.Contains(diff.Differences, d => d.Path == "model.safetensors" && d.Difference == "contentDiffers");
        Assert.Contains(diff.Differences, d => d.Path == "README.md" && d.Difference == "onlyRight");
        Assert.DoesNotContain(OutputComparison.Compare(a, c, OutputComparison.ProvenanceFiles).Differences, d => d.Path == "README.md");
        Assert.Contains("differ", diff.ToText(), StringComparison.Ordinal);

        var running = await registry.BeginAsync(Samples.Draft(temp));
        Assert.Throws<InvalidOperationException>(() => OutputComparison.Compare(a, running));
    }

    [Fact]
    public async Task Text_renderings_show_every_section()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var rec = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp), "out", "me/merged");
        await registry.AddEvaluationAsync("me/merged", new EvaluationResult("me/merged", "math", "exact_match", 0.61, 100, default));
        rec = (await registry.GetAsync(rec.Id))!;
        var show = RegistryText.Show(rec);
        foreach (var section in new[] { "Plugins", "Inputs", "Parameters", "Scores: sensitivity", "Coefficients (sens", "Outputs", "Evaluations", "Durations", "Config", "sens(ties)", rec.Outputs!.Files[0].Sha256 })
        {
            Assert.Contains(section, show, StringComparison.Ordinal);
        }
        var list = RegistryText.List(await registry.ListAsync(new MergeQuery()));
        var lines = list.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.StartsWith("ID", lines[0], StringComparison.Ordinal);
        Assert.Contains(rec.Id, lines[1], StringComparison.Ordinal);
        Assert.Equal(lines[0].IndexOf("STATUS", StringComparison.Ordinal), lines[1].IndexOf("succeeded", StringComparison.Ordinal));
    }
}
