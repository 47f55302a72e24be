using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SensMerging.Core.Config;
using SensMerging.Core.Lora;
using SensMerging.Core.Models;
using SensMerging.Host.Merging;

namespace SensMerging.Host.Cli;

/// <summary>
/// <c>sensmerge extract-lora BASE FINETUNE --out DIR (--rank R | --energy E)</c>: a PEFT LoRA adapter from a fine-tune
/// minus its base (truncated SVD per linear weight), as mergekit-extract-lora makes one.
/// </summary>
public static class ExtractLoraCommand
{
    public static Command Create()
    {
        var baseModel = new Argument<string>("base") { Description = "The base model: a local folder or a Hub reference org/name[@rev]" };
        var finetune = new Argument<string>("finetune") { Description = "The fine-tuned model: a local folder or a Hub reference" };
        var output = new Option<DirectoryInfo>("--out", "-o") { Description = "Adapter folder to write (absent or empty)", Required = true };
        var rank = new Option<int?>("--rank", "-r") { Description = "The adapter's rank (with --energy: the largest allowed)" };
        var energy = new Option<double?>("--energy") { Description = "Keep at least this fraction (0-1] of every module's squared singular values; the rank is the smallest that does" };
        var command = new Command("extract-lora", "Write a LoRA adapter (PEFT layout) approximating FINETUNE - BASE by truncated SVD of each linear weight")
        {
            baseModel, finetune, output, rank, energy,
        };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            if (parse.GetValue(rank) is null && parse.GetValue(energy) is null)
            {
                throw new ArgumentException("give --rank, --energy or both");
            }
            var resolver = services.GetRequiredService<HostModelResolver>();
            var cwd = Directory.GetCurrentDirectory();
            var baseRef = ModelReference.Parse(parse.GetValue(baseModel)!, cwd);
            var ftRef = ModelReference.Parse(parse.GetValue(finetune)!, cwd);
            var baseResolved = await resolver.ResolveAsync(baseRef, token);
            var ftResolved = await resolver.ResolveAsync(ftRef, token);
            using var baseFolder = ModelFolder.Open(baseResolved.LocalPath, baseResolved.Adapter?.LocalPath);
            using var ftFolder = ModelFolder.Open(ftResolved.LocalPath, ftResolved.Adapter?.LocalPath);
            var extractor = new LoraExtractor(services.GetRequiredService<ILogger<LoraExtractor>>());
            var request = new ExtractLoraRequest(parse.GetValue(output)!.FullName, parse.GetValue(rank), parse.GetValue(energy),
                baseRef.IsLocal ? baseResolved.LocalPath : baseRef.Repo!);
            var result = await Task.Run(() => extractor.Extract(baseFolder, ftFolder, request, token), token);
            foreach (var m in result.Modules)
            {
                Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{m.Module} [{string.Join(", ", m.Shape)}]: energy kept {m.RetainedEnergy * 100:F2}%, relative error {m.RelativeError:G4}"));
            }
            if (result.NotCaptured.Count > 0)
            {
                await Console.Error.WriteLineAsync($"warning: {result.NotCaptured.Count} tensors differ but are not linear weights, so the adapter does not carry them: {string.Join(", ", result.NotCaptured)}");
            }
            Console.Out.WriteLine($"wrote a rank-{result.Rank} LoRA adapter of {result.Modules.Count} modules to {result.OutputPath}");
            return 0;
        }, ct));
        return command;
    }
}
