export { digestSource } from "../util/sources.js";
