using TorchSharp;
var t = torch.ones(3, 3);
Console.WriteLine((t * 2).sum().item<float>());
