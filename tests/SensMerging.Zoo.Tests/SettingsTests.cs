using SensMerging.Zoo.Training;

namespace SensMerging.Zoo.Tests;

public sealed class SettingsTests
{
    [Fact]
    public void Learning_rate_warms_up_linearly_then_decays_by_cosine_to_the_floor()
    {
        var settings = new TrainingSettings(Steps: 110, BatchSize: 4, LearningRate: 1.0, WarmupSteps: 10, MinLearningRateRatio: 0.1);
        Assert.Equal(0.1, settings.LearningRateAt(0), 12);
        Assert.Equal(1.0, settings.LearningRateAt(9), 12);
        Assert.Equal(1.0, settings.LearningRateAt(10), 12);
        Assert.Equal(0.1 + (0.9 * 0.5), settings.LearningRateAt(60), 12); // half-way through the decay
        Assert.Equal(0.1, settings.LearningRateAt(110), 12);
    }

    [Fact]
    public void Invalid_settings_are_rejected_with_the_setting_named()
    {
        Assert.Contains("Learning rate", Assert.Throws<ArgumentException>(() => new TrainingSettings(10, 4, 0, 1).Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("Warm-up", Assert.Throws<ArgumentException>(() => new TrainingSettings(10, 4, 1e-3, 11).Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("Threads", Assert.Throws<ArgumentException>(() => new TrainingSettings(10, 4, 1e-3, 1, Threads: 0).Validate()).Message, StringComparison.Ordinal);
        var bad = ZooSettings.For(ZooSize.Tiny) with { MaxLength = 500 };
        Assert.Contains("max_length", Assert.Throws<ArgumentException>(bad.Validate).Message, StringComparison.Ordinal);
        Assert.Contains("tiny or default", Assert.Throws<ArgumentException>(() => ZooSettings.ParseSize("huge")).Message, StringComparison.Ordinal);
        var replay = ZooSettings.For(ZooSize.Tiny) with { ExpertReplay = 1.0 };
        Assert.Contains("replay", Assert.Throws<ArgumentException>(replay.Validate).Message, StringComparison.Ordinal);
        var noDev = ZooSettings.For(ZooSize.Tiny) with { Data = ZooSettings.For(ZooSize.Tiny).Data with { Dev = 0 } };
        Assert.Contains("dev 0", Assert.Throws<ArgumentException>(noDev.Validate).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_settings_file_with_an_unknown_or_misspelt_key_is_refused_naming_it()
    {
        var path = Path.Combine(Path.GetTempPath(), $"zoo-settings-{Guid.NewGuid():N}.json");
        try
        {
            var json = System.Text.Json.JsonSerializer.Serialize(ZooSettings.For(ZooSize.Tiny), ZooManifest.JsonOptions);
            File.WriteAllText(path, json);
            Assert.Equal(ZooManifest.Fingerprint(ZooSettings.For(ZooSize.Tiny)), ZooManifest.Fingerprint(ZooSettings.Load(path)));
            // anchor_decay is written only when set, so zoos built before it existed keep their fingerprint.
            Assert.DoesNotContain("anchor_decay", json, StringComparison.Ordinal);
            var anchored = ZooSettings.For(ZooSize.Tiny) with { Expert = ZooSettings.For(ZooSize.Tiny).Expert with { AnchorDecay = 25 } };
            File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize(anchored, ZooManifest.JsonOptions));
            Assert.Contains("\"anchor_decay\": 25", File.ReadAllText(path), StringComparison.Ordinal);
            Assert.Equal(25, ZooSettings.Load(path).Expert.AnchorDecay);
            File.WriteAllText(path, json.Replace("\"low_rank\"", "\"lowrank\"", StringComparison.Ordinal));
            var error = Assert.Throws<ArgumentException>(() => ZooSettings.Load(path));
            Assert.Contains("lowrank", error.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Presets_parse_and_share_one_layout_between_base_and_experts()
    {
        Assert.Equal(ZooSize.Tiny, ZooSettings.ParseSize(" Tiny "));
        Assert.Equal(ZooSize.Default, ZooSettings.ParseSize("default"));
        foreach (var size in new[] { ZooSize.Tiny, ZooSize.Default })
        {
            var settings = ZooSettings.For(size);
            settings.Validate();
            var config = settings.Model.ToConfig(100);
            config.Validate();
            Assert.Equal("llama", config.ModelType);
            Assert.Equal(10000.0, config.RopeTheta);
            Assert.True(settings.Expert.Steps < settings.Base.Steps);
        }
        Assert.NotEqual(ZooManifest.Fingerprint(ZooSettings.For(ZooSize.Tiny)), ZooManifest.Fingerprint(ZooSettings.For(ZooSize.Default)));
    }
}
